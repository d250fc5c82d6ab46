"""Rendering a run's messages: in the sending process, or in render processes.

The rule: a message is rendered and DKIM-signed from its claimed row alone
(``compose_claimed``: the one place that turns a row into what a template
sees), to its wire form, and one that cannot be built is that row's failure
with the reason, never a reason to stop the others. From ``POOL_THRESHOLD``
messages on, rendering and signing move to spawned processes (``Renderer``;
LISTKIT_RENDER_WORKERS of them, by default one per core on a machine with a
second core) that run at a lower priority than the sending process and die
with their parent, so that the event loop only sends, the moment it has
work; a run hands them several batches at once and takes the results back
in the order it claimed them. Below that, signing (RSA, the costly step)
runs on a thread and plain rendering inline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from listkit.audience.subscribers import subscriber_dict
from listkit.config import Settings
from listkit.errors import HeaderInjection, TemplateError
from listkit.mail.compose import Composed, Composer
from listkit.mail.offers import load_offer
from listkit.processes import exit_with_parent
from listkit.send.outbox import Claimed
from listkit.send.smtp import wire_form

# From this many messages on, rendering moves to render processes (starting
# one costs about a third of a second).
POOL_THRESHOLD = 1000
# How much lower the render processes' priority is than the sending process's
# (``os.nice``): the event loop, which handles the SMTP replies, then runs the
# moment it has work, and the render processes take what is left of the cores.
# With two render processes on two cores, the sending process waited for a
# core less than half as long, and a DKIM-signed send was about 3% faster on a
# quiet machine and about a fifth faster beside other work (bench/send.py);
# nice 5 and 19 did about as well as 10. With one render process it changes
# nothing measurable.
RENDER_NICENESS = 10

Rendered = list[tuple[bytes | None, str | None]]


def render_processes(settings: Settings, due: int, *, signed: bool = True) -> int:
    """How many render processes a run of ``due`` messages gets: none below
    ``POOL_THRESHOLD``; else LISTKIT_RENDER_WORKERS, or, on a machine with more than
    one core, one per core for a DKIM-signed send, and one per core but the event
    loop's for an unsigned one (rendering alone is light: a second render process
    on a second core takes that core from the sending, which then goes slower)."""
    if due < POOL_THRESHOLD:
        return 0
    forced = settings.render_workers
    if forced is not None:
        return forced
    cores = os.cpu_count() or 1
    if cores == 1:
        return 0
    return cores if signed else cores - 1


class Renderer:
    """Renders a run's batches, in ``processes`` render processes or (0) here.

    ``submit`` starts a batch and returns its future at once: the run keeps
    ``ahead`` batches going, so that every render process has work while the
    event loop sends, and awaits them in the order it submitted them. A render
    process takes about half a second to start (an interpreter importing
    listkit): until one is ready, batches are rendered here, so that the
    sending starts at once.
    """

    def __init__(self, composer: Composer, processes: int):
        self.composer = composer
        self.pool = _start_pool(composer, processes) if processes else None
        # Two batches a process: one rendering, the next waiting for it.
        self.ahead = 2 * processes if processes else 1
        self.warm: asyncio.Future[None] | None = None
        # One thread: batches signed here finish one after the other, the first first.
        self.signing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listkit-sign")

    def started(self) -> asyncio.Future[None]:
        """Done once a render process is ready (at once without any)."""
        loop = asyncio.get_running_loop()
        if self.warm is None:
            if self.pool is None:
                self.warm = loop.create_future()
                self.warm.set_result(None)
            else:
                self.warm = loop.run_in_executor(self.pool, _ready)
                # A pool that cannot start says so on the next submit instead.
                self.warm.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self.warm

    def submit(self, rows: list[Claimed]) -> asyncio.Future[Rendered]:
        """``compose_rows`` for one batch, where it costs the event loop least."""
        loop = asyncio.get_running_loop()
        if self.pool is not None and self.started().done():
            return loop.run_in_executor(self.pool, _pool_compose, rows)
        if self.composer.signer is not None:
            # Signing (RSA) is the costly step: keep it off the event loop.
            return loop.run_in_executor(self.signing, compose_rows, self.composer, rows)
        done = loop.create_future()
        done.set_result(compose_rows(self.composer, rows))
        return done

    def close(self) -> None:
        self.signing.shutdown(wait=True, cancel_futures=True)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _start_pool(composer: Composer, processes: int) -> ProcessPoolExecutor:
    """Render processes with a composer like ``composer``, started with its settings."""
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_pool_init,
        initargs=(
            os.getpid(),
            composer.settings,
            composer.offers_dir,
            composer.campaign,
            composer.offer.slug,
        ),
    )


def compose_claimed(composer: Composer, row: Claimed, *, sign: bool = True) -> Composed:
    """The message of one claimed row: everything a render process is given
    of a delivery passes through here."""
    return composer.compose(
        subscriber=subscriber_dict(
            row.subscriber_id,
            row.email,
            row.key,
            row.name,
            row.first_name,
            row.last_name,
            row.fields,
        ),
        list_slug=row.list_slug,
        list_title=row.list_title,
        token=row.token,
        sign=sign,
        check_leftovers=False,
    )


def compose_rows(composer: Composer, rows: list[Claimed]) -> Rendered:
    """(message in wire form, None) or (None, why it cannot be built) for each row."""
    built: list[tuple[bytes | None, str | None]] = []
    for row in rows:
        try:
            built.append((compose_claimed(composer, row, sign=False).data, None))
        except (TemplateError, HeaderInjection) as e:
            built.append((None, str(e)))
    # The batch is signed once it is rendered: RSA's code and key stay in the
    # CPU's caches from one signature to the next, instead of being evicted by
    # the rendering in between (about a tenth of the time of signing).
    signer = composer.signer
    return [
        (wire_form(data if signer is None else signer.sign(data)), None)
        if data is not None
        else (None, why)
        for data, why in built
    ]


_POOL_COMPOSER: Composer | None = None


def _pool_init(parent_pid: int, settings, offers_dir: Path, campaign: str, offer_slug: str) -> None:
    global _POOL_COMPOSER
    exit_with_parent(parent_pid)  # a `listkit send` killed with SIGKILL leaves no renderer
    if hasattr(os, "nice"):  # not on Windows
        os.nice(RENDER_NICENESS)
    offer = load_offer(offers_dir, offer_slug)
    _POOL_COMPOSER = Composer(
        offer,
        settings,
        campaign=campaign,
        offers_dir=offers_dir,
        track_clicks=settings.track_clicks,
    )


def _ready() -> None:
    """Nothing: done once a render process has started."""


def _pool_compose(rows: list[Claimed]) -> Rendered:
    assert _POOL_COMPOSER is not None
    return compose_rows(_POOL_COMPOSER, rows)
