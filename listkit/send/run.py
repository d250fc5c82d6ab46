"""One sending run of one campaign: claim, render, mark, transact, record.

The rules (see ``outbox`` for the state machine):

- every SMTP transaction carries one recipient, so each RCPT reply is that
  recipient's answer (no partial refusals to untangle);
- a row is claimed, and committed, before its transaction starts; before its
  content goes out it is durably marked in the marks file (``marks``: no
  SQLite lock to wait for while another process writes the database), many
  messages' marks sharing one sync; results share one commit; both are made
  off the event loop;
- the transaction is ``smtp.transact``, on a connection from
  ``connect.open_connection``; rendering is ``render``'s;
- a message is ``sent`` only after the server's 2xx to the final dot;
- connection trouble before DATA defers a row, after DATA began makes it
  ``unknown`` (the server may have it), and consecutive connection failures
  stop the run with every row resumable.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from listkit.config import SMTPSettings
from listkit.db import open_db
from listkit.errors import SendError
from listkit.mail.compose import Composer
from listkit.mail.replies import HARD, classify
from listkit.mail.verp import envelope_sender
from listkit.send.campaigns import Campaign, declined_campaigns
from listkit.send.connect import open_connection
from listkit.send.marks import MarkFile
from listkit.send.outbox import Claimed, Result, claim, may_go, record
from listkit.send.render import Rendered, Renderer
from listkit.send.respect import Respect
from listkit.send.smtp import Ahead, Connection, ConnectionLost, Outcome, ahead_of, transact

T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop where it is installed (its event loop costs about
    half the CPU of asyncio's per message; the send's main process is the busy
    one), else on asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# Results are committed at most this often (seconds). A commit waits for an
# fsync and costs the sending process about 0.25 ms of CPU whatever its size:
# committed as they came, a 20,000-message send made 3,866 commits of about
# five results. A run killed meanwhile leaves these rows unknown (their marks
# say the content may be out), as during any commit.
RECORD_EVERY = 0.01

# The pause between failed connection attempts; tests record it instead of waiting.
backoff_sleep = asyncio.sleep


class RateLimiter:
    """Spaces a run's transactions at ``rate`` a second, over all its connections
    (0: no limit)."""

    def __init__(self, rate: float):
        self.interval = 1 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(self.next, now)
        self.next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


def _abandon(ahead: Ahead, client: Connection | None) -> Connection | None:
    """``ahead``'s content will not follow on ``client``: its replies end quietly, and
    a connection whose server waits for that content (its envelope went) is dropped.
    Returns the connection to go on with, or None."""
    ahead.forget()
    if ahead.sent and client is not None:
        client.abort()
        return None
    return client


class Run:
    """One sending run of one campaign."""

    def __init__(
        self,
        *,
        db_path: Path,
        campaign_id: int,
        campaign: Campaign,
        composer: Composer,
        smtp: SMTPSettings,
        sender_address: str,
        limit: int | None = None,
        batch: int = 200,
        max_connect_failures: int = 5,
        on_result: Callable[[Result], None] | None = None,
        compose_processes: int = 0,
        bounce_address: str | None = None,
        variant: str | None = None,
        respect: Respect | None = None,
    ):
        self.compose_processes = compose_processes
        self.bounce_address = bounce_address
        self.variant = variant
        self.respect = respect  # a selling message's rules for its readers (claim checks)
        self.db_path = db_path
        self.campaign_id = campaign_id
        self.campaign = campaign
        self.composer = composer
        self.smtp = smtp
        self.sender_address = sender_address
        self.limit = limit
        self.batch = batch
        self.max_connect_failures = max_connect_failures
        self.on_result = on_result
        self.run_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.counts: dict[str, int] = {}
        self.stopped: str | None = None
        self.fatal: BaseException | None = None
        self.connect_failures = 0
        self.connected_once = False
        self.first_connect = asyncio.Lock()

    # The database lives on one thread; every call goes through it. The marks
    # have a thread of their own (with a connection that only reads), so that
    # a mark never waits behind a commit that waits for the write lock.
    async def db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def in_marks_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.mark_executor, fn, *args)

    def _open(self) -> None:
        self.conn_db = open_db(self.db_path)
        # Whose "no" stops this campaign: read once, checked at each claim and mark.
        self.declined = declined_campaigns(self.conn_db, self.campaign)

    def _open_marks(self) -> None:
        self.mark_db = open_db(self.db_path)
        self.mark_file = MarkFile(self.db_path)

    def _close_marks(self, clear: bool) -> None:
        if clear:
            self.mark_file.clear()
        self.mark_file.close()
        self.mark_db.close()

    def _mark(self, ids: list[int]) -> set[int]:
        """Durably mark the rows of ``ids`` that may still go out; returns those."""
        allowed = may_go(self.mark_db, ids, self.declined)
        self.mark_file.mark(self.run_id, [i for i in ids if i in allowed])
        return allowed

    async def run(self) -> dict[str, int]:
        """Claim, render and send until no row is due, ``limit`` is reached or the
        run stops; this run's count of each state recorded. A producer claims and
        renders batches, ``concurrency`` workers each hold a connection, the
        marker writes marks and the flusher commits results."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listkit-db")
        self.mark_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listkit-marks")
        self.renderer = Renderer(self.composer, self.compose_processes)
        self.renderer.started()  # render processes start while the database opens
        try:
            await self.db(self._open)
            await self.in_marks_thread(self._open_marks)
            # Room for two batches: one being sent while the next is rendered.
            self.queue: asyncio.Queue = asyncio.Queue(
                maxsize=max(self.campaign.concurrency * 2, self.batch * 2)
            )
            self.marks: list[tuple[int, asyncio.Future]] = []
            self.results: list[Result] = []
            # Marked rows whose result is not recorded yet (a failed commit
            # leaves its rows here): the marks file is emptied at the end only
            # if none is left.
            self.open_marks: set[int] = set()
            self.wake = asyncio.Event()
            self.recorded_at = 0.0
            self.mark_wake = asyncio.Event()
            self.closing = False
            self.limiter = RateLimiter(self.campaign.rate)
            flusher = asyncio.create_task(self._flusher())
            marker = asyncio.create_task(self._marker())
            workers = [
                asyncio.create_task(self._worker()) for _ in range(self.campaign.concurrency)
            ]
            try:
                await self._producer()
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                self.closing = True
                self.mark_wake.set()
                await marker
                self.wake.set()
                await flusher
            await self.db(self.conn_db.close)
            await self.in_marks_thread(self._close_marks, not self.open_marks)
        finally:
            self.executor.shutdown(wait=True)
            self.mark_executor.shutdown(wait=True)
            self.renderer.close()
        if self.fatal is not None:
            raise self.fatal
        return self.counts

    async def _producer(self) -> None:
        """Claims batches and keeps ``renderer.ahead`` of them rendering; queues
        each batch's messages, in the order claimed, once it is rendered."""
        rendering: deque[tuple[list[Claimed], asyncio.Future[Rendered]]] = deque()
        remaining = self.limit
        while self.stopped is None and (remaining is None or remaining > 0):
            size = self.batch if remaining is None else min(self.batch, remaining)
            rows: list[Claimed] = await self.db(
                partial(claim, secret=self.composer.secret),
                self.conn_db,
                self.campaign_id,
                self.run_id,
                size,
                self.variant,
                self.declined,
                self.respect,
            )
            if not rows:
                break
            if remaining is not None:
                remaining -= len(rows)
            rendering.append((rows, self.renderer.submit(rows)))
            # A batch already rendered (here, while no render process is ready yet)
            # goes to the workers at once, rather than after the next batches.
            while rendering and (len(rendering) >= self.renderer.ahead or rendering[0][1].done()):
                await self._enqueue(*rendering.popleft())
        while rendering:
            await self._enqueue(*rendering.popleft())
        for _ in range(self.campaign.concurrency):
            await self.queue.put(None)

    async def _enqueue(self, rows: list[Claimed], rendering: asyncio.Future[Rendered]) -> None:
        """Queue a rendered batch for the workers; a row that cannot be built fails,
        and once the run stops, the rest goes back to pending."""
        built = await rendering
        for i, (row, (data, error)) in enumerate(zip(rows, built, strict=True)):
            if self.stopped is not None:
                for left in rows[i:]:
                    self._result(Result(left.id, "pending"))
                break
            if error is not None:
                self._result(Result(row.id, "failed", None, error, row.attempts))
                continue
            await self.queue.put((row, data))

    def _result(self, result: Result) -> None:
        self.results.append(result)
        self.wake.set()
        if result.state != "pending":
            self.counts[result.state] = self.counts.get(result.state, 0) + 1
            if self.on_result is not None:
                self.on_result(result)

    def _mark_data(self, delivery_id: int) -> asyncio.Future[bool]:
        """Ask for the durable mark that the content may go out.

        The future says True once it is committed, False if the address left
        meanwhile; the flusher settles it (no task of its own per message).
        """
        future = asyncio.get_running_loop().create_future()
        self.marks.append((delivery_id, future))
        self.mark_wake.set()
        return future

    async def _marker(self) -> None:
        """Writes the marks asked for meanwhile, all with one sync, while the
        previous group's sync runs; then lets their content go."""
        while True:
            await self.mark_wake.wait()
            self.mark_wake.clear()
            while self.marks:
                marks, self.marks = self.marks, []
                try:
                    allowed = await self.in_marks_thread(self._mark, [m[0] for m in marks])
                except BaseException as e:  # nothing more may be sent
                    self.fatal = self.fatal or e
                    self.stopped = self.stopped or f"cannot mark messages as going out: {e}"
                    for _, future in marks:
                        if not future.done():
                            future.set_exception(SendError(self.stopped))
                    continue
                self.open_marks.update(allowed)
                for delivery_id, future in marks:
                    if not future.done():
                        future.set_result(delivery_id in allowed)
            # Checked after draining: a close signalled while we worked is not lost.
            if self.closing:
                return

    async def _flusher(self) -> None:
        """Records the results that came in meanwhile, in one commit, while the
        previous group's commit runs."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.results:
                pause = self.recorded_at + RECORD_EVERY - time.monotonic()
                if pause > 0 and not self.closing:
                    await asyncio.sleep(pause)  # more results join this commit meanwhile
                self.recorded_at = time.monotonic()
                results, self.results = self.results, []
                try:
                    await self.db(record, self.conn_db, self.campaign_id, results)
                except BaseException as e:  # the database refused: nothing more may be sent
                    self.fatal = self.fatal or e
                    self.stopped = self.stopped or f"database error: {e}"
                    continue
                self.open_marks.difference_update(r.id for r in results)
            # Checked after draining: a close signalled while we worked is not lost.
            if self.closing:
                return

    async def _worker(self) -> None:
        client: Connection | None = None
        # The message in hand, and its envelope when it went out with the content
        # of the message before it (``smtp.Ahead``).
        item = await self.queue.get()
        ahead: Ahead | None = None
        try:
            while item is not None:
                row, data = item
                if ahead is not None and (
                    self.stopped is not None or client is None or not client.is_connected
                ):
                    # Its content will not follow on that connection (the run stopped,
                    # or the connection is gone): nothing of it went out.
                    client, ahead = _abandon(ahead, client), None
                if self.stopped is not None:
                    self._result(Result(row.id, "pending"))
                    item = await self.queue.get()
                    continue
                following: list = []  # what the transaction took from the queue to go ahead
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect_or_release(row)
                        if client is None:
                            item = await self.queue.get()
                            continue
                    if ahead is None:
                        await self.limiter.wait()
                    result, keep = await self._deliver(client, row, data, ahead, following)
                except Exception as e:
                    # Unexpected: stop. The row stays 'sending' at the phase it reached,
                    # and the next run resolves it from there.
                    self.fatal = self.fatal or e
                    self.stopped = self.stopped or f"internal error: {type(e).__name__}: {e}"
                else:
                    self._result(result)
                    if not keep:
                        client.close()
                        client = None
                item, ahead = following[0] if following else (await self.queue.get(), None)
        finally:
            if ahead is not None:
                client = _abandon(ahead, client)
            if client is not None:
                await client.quit()

    async def _connect_or_release(self, row: Claimed) -> Connection | None:
        # Until one connection has opened (and logged in), the workers connect
        # one at a time: a wrong password or a refused STARTTLS is met once and
        # stops the run, instead of once per worker.
        if not self.connected_once:
            async with self.first_connect:
                if not self.connected_once:
                    return await self._connect_loop(row)
        return await self._connect_loop(row)

    async def _connect_loop(self, row: Claimed) -> Connection | None:
        while self.stopped is None:
            try:
                client = await open_connection(self.smtp)
            except SendError as e:
                self.fatal = self.fatal or e
                self.stopped = str(e)
                break
            except (TimeoutError, OSError, ConnectionLost, aiosmtplib.SMTPException) as e:
                self.connect_failures += 1
                if self.connect_failures >= self.max_connect_failures:
                    self.stopped = (
                        f"cannot connect to {self.smtp.masked()} ({e}); stopped after "
                        f"{self.connect_failures} failed attempts, every message is resumable"
                    )
                    break
                await backoff_sleep(min(0.2 * 2**self.connect_failures, 5))
                continue
            self.connect_failures = 0
            self.connected_once = True
            return client
        self._result(Result(row.id, "pending"))
        return None

    async def _deliver(
        self, conn: Connection, row: Claimed, data: bytes, ahead: Ahead | None, following: list
    ) -> tuple[Result, bool]:
        """Send one message (``data`` in wire form; ``ahead``: its envelope went out
        already); (result, keep the connection). The next message the queue holds
        (none with a rate limit) goes ahead with the content, put in ``following``
        with its ``Ahead`` (None: it goes on its own)."""
        envelope = self._envelope_sender(row)

        def then() -> Ahead | None:
            if self.limiter.interval or self.queue.empty():
                return None
            item = self.queue.get_nowait()
            if item is None:  # the end: no message follows
                following.append((None, None))
                return None
            nxt, nxt_data = item
            sender = self._envelope_sender(nxt)
            nxt_ahead = ahead_of(conn, sender, nxt.email, nxt_data, lambda: self._mark_data(nxt.id))
            following.append((item, nxt_ahead))
            return nxt_ahead

        out = await transact(
            conn,
            envelope,
            row.email,
            data,
            ready=lambda: self._mark_data(row.id),
            then=then,
            ahead=ahead,
        )
        if out.state == "refused" and out.command == "MAIL FROM" and (out.code or 0) >= 500:
            self._sender_refused(envelope, out)
            return Result(row.id, "pending"), out.keep
        return self._outcome_result(row, out), out.keep

    def _envelope_sender(self, row: Claimed) -> str:
        """With a bounce address, the envelope names the delivery (VERP); the
        token is only derived then."""
        if not self.bounce_address:
            return self.sender_address
        return envelope_sender(self.bounce_address, self.sender_address, row.token)

    def _sender_refused(self, envelope: str, out: Outcome) -> None:
        """The server refuses our envelope sender: every message would meet the
        same refusal, so the run stops, naming the setting to change."""
        self.stopped = f"the server refused the sender {envelope}: {out.code} {out.reply}"
        setting = "LISTKIT_BOUNCE_ADDRESS" if self.bounce_address else "LISTKIT_FROM"
        self.fatal = self.fatal or SendError(f"{setting}: {self.stopped}")

    def _outcome_result(self, row: Claimed, out: Outcome) -> Result:
        """What the outbox records of a transaction's outcome."""
        attempts = row.attempts
        if out.state == "sent":
            return Result(row.id, "sent", out.code, out.reply[:500], attempts)
        if out.state == "refused":
            return self._refusal(row, out)
        if out.state == "stopped":
            return Result(row.id, "pending")
        if out.state == "held":
            reply = "unsubscribed or suppressed while the campaign was sending"
            return Result(row.id, "skipped", None, reply, attempts)
        # failed (not tried), deferred (nothing went out), unknown (the server may have it)
        return Result(row.id, out.state, None, out.reply, attempts)

    def _refusal(self, row: Claimed, out: Outcome) -> Result:
        """A 5xx fails the row (a hard bounce if the reply says so), a 4xx defers it."""
        assert out.code is not None and out.command is not None
        if out.code >= 500:
            return Result(
                row.id,
                "failed",
                out.code,
                out.answered,
                row.attempts,
                hard_bounce=classify(out.code, out.reply, command=out.command) == HARD,
                email=row.email,
            )
        return Result(row.id, "deferred", out.code, out.answered, row.attempts)
