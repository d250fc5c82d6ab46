"""Rendering a run's messages: in the sending process, or in a render process.

The rule: a message is rendered (and DKIM-signed) from its claimed row alone,
to its wire form, and one that cannot be built is that row's failure with
the reason, never a reason to stop the others. From ``POOL_THRESHOLD``
messages on, on a machine with a second core, rendering moves to one spawned
process (``start_pool``) that dies with its parent, so that it overlaps the
sending; below that, signing (RSA, the costly step) runs on a thread and
plain rendering inline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from listkit.audience.subscribers import subscriber_dict
from listkit.errors import HeaderInjection, TemplateError
from listkit.mail.compose import Composed, Composer
from listkit.mail.offers import load_offer
from listkit.processes import exit_with_parent
from listkit.send.outbox import Claimed
from listkit.send.smtp import wire_form

# From this many messages on, rendering moves to a second process (its start-up
# costs about a third of a second).
POOL_THRESHOLD = 1000

Rendered = list[tuple[bytes | None, str | None]]


def render_processes(due: int) -> int:
    """How many render processes a run of ``due`` messages gets (0 or 1)."""
    return 1 if due >= POOL_THRESHOLD and (os.cpu_count() or 1) > 1 else 0


def start_pool(composer: Composer, processes: int) -> ProcessPoolExecutor:
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


async def render(
    composer: Composer, rows: list[Claimed], pool: ProcessPoolExecutor | None
) -> Rendered:
    """``compose_rows`` for one batch, where it costs the event loop least."""
    loop = asyncio.get_running_loop()
    if pool is not None:
        # Rendering runs on the other core while the workers send the previous
        # batch from the queue.
        return await loop.run_in_executor(pool, _pool_compose, rows)
    if composer.signer is not None:
        # Signing (RSA) is the costly step: keep it off the event loop.
        return await loop.run_in_executor(None, compose_rows, composer, rows)
    return compose_rows(composer, rows)


def compose_claimed(composer: Composer, row: Claimed) -> Composed:
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
    )


def compose_rows(composer: Composer, rows: list[Claimed]) -> Rendered:
    """(message in wire form, None) or (None, why it cannot be built) for each row."""
    out: list[tuple[bytes | None, str | None]] = []
    for row in rows:
        try:
            out.append((wire_form(compose_claimed(composer, row).data), None))
        except (TemplateError, HeaderInjection) as e:
            out.append((None, str(e)))
    return out


_POOL_COMPOSER: Composer | None = None


def _pool_init(parent_pid: int, settings, offers_dir: Path, campaign: str, offer_slug: str) -> None:
    global _POOL_COMPOSER
    exit_with_parent(parent_pid)  # a `listkit send` killed with SIGKILL leaves no renderer
    offer = load_offer(offers_dir, offer_slug)
    _POOL_COMPOSER = Composer(
        offer,
        settings,
        campaign=campaign,
        offers_dir=offers_dir,
        track_clicks=settings.track_clicks,
    )


def _pool_compose(rows: list[Claimed]) -> Rendered:
    assert _POOL_COMPOSER is not None
    return compose_rows(_POOL_COMPOSER, rows)
