"""Sending a campaign over SMTP: a pool of connections, a rate limit, group commits.

The rules (see ``outbox`` for the state machine):

- every SMTP transaction carries one recipient, so each RCPT reply is that
  recipient's answer (no partial refusals to untangle);
- a row is claimed, and committed, before its transaction starts; before its
  content goes out it is durably marked in the marks file (``marks``: no
  SQLite lock to wait for while another process writes the database), many
  messages' marks sharing one sync; results share one commit; both are made
  off the event loop;
- the transaction runs on ``smtp.Connection`` (pipelined when the server
  offers PIPELINING); aiosmtplib opens and authenticates the connection;
- a message is ``sent`` only after the server's 2xx to the final dot;
- connection trouble before DATA defers a row, after DATA began makes it
  ``unknown`` (the server may have it), and consecutive connection failures
  stop the run with every row resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing
import os
import re
import secrets
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from listkit.audience.addresses import ascii_domain, normalize_address
from listkit.audience.lists import get_list
from listkit.audience.subscribers import subscriber_dict
from listkit.config import SMTPSettings
from listkit.db import describe_db_error, open_db
from listkit.errors import (
    ConfigError,
    HeaderInjection,
    InputError,
    ListkitError,
    SendError,
    TemplateError,
)
from listkit.files import PRIVATE, write_private
from listkit.mail.compose import SAMPLE_SUBSCRIBER, Composed, Composer, Problem
from listkit.mail.offers import load_offer
from listkit.mail.replies import HARD, classify
from listkit.mail.tracking import new_token
from listkit.processes import exit_with_parent
from listkit.send.campaigns import (
    Campaign,
    campaign_row,
    campaign_slugs,
    declined_campaigns,
    due_status,
    format_duration,
    iter_audience,
    load_campaign,
    register,
    reschedule,
    rescheduled,
    set_state,
    without_holdout,
)
from listkit.send.marks import MarkFile, fold_marks
from listkit.send.outbox import (
    Claimed,
    Result,
    build_outbox,
    claim,
    counts,
    may_go,
    record,
    recover,
    top_up,
)
from listkit.send.sequences import check_ready, followup_status
from listkit.send.smtp import Connection, ConnectionLost, wire_form
from listkit.send.smtp import path as smtp_path
from listkit.send.variants import assign_variant, release_rest, rest_due
from listkit.send.verp import bounce_address, verp_address
from listkit.workspace import Workspace

T = TypeVar("T")

LOCK_NAME = ".listkit-send.lock"
# From this many messages on, rendering moves to a second process (its start-up
# costs about a third of a second).
POOL_THRESHOLD = 1000
# The replies that let a transaction go on: to MAIL FROM, RCPT TO and DATA.
_ENVELOPE_OK = ((250,), (250, 251), (354,))
_COMMANDS = ("MAIL FROM", "RCPT TO", "DATA")


class AlreadyRunning(ListkitError):
    """Another `listkit send` holds the workspace's send lock."""


@contextlib.contextmanager
def send_lock(root: Path):
    """Hold the send lock in ``root``; raise AlreadyRunning if another run has it.

    ``root`` is the database's folder (the workspace, unless LISTKIT_DB points
    elsewhere): two workspaces sharing one database share the lock, or the
    second run's recovery would hand the first run's claimed rows out again."""
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another listkit send is running in {root} (pid {holder}); "
                "it will finish the work, nothing was sent by this run"
            ) from None
        pid = str(os.getpid()).encode()
        try:
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError as e:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, str(path)) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _smtp_client(smtp: SMTPSettings) -> aiosmtplib.SMTP:
    # No credentials here: aiosmtplib would try every AUTH mechanism the server
    # offers with a wrong password; ``connect`` makes exactly one attempt.
    return aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        use_tls=smtp.tls == "tls",
        start_tls=smtp.tls == "starttls",
        timeout=smtp.timeout,
        cert_bundle=smtp.ca_file,
        local_hostname=smtp.ehlo_name or "localhost",
    )


# AUTH mechanisms in the order listkit uses them: one of them, once.
_AUTH_MECHANISMS = ("plain", "login", "cram-md5")
# OpenSSL verify codes (X509_V_ERR_*) that mean "no trusted CA signed this".
_UNTRUSTED = {2, 18, 19, 20, 21}


def _ssl_error(e: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``e``, if any (aiosmtplib wraps it)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, ssl.SSLError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _tls_problem(smtp: SMTPSettings, e: ssl.SSLError) -> str:
    """Why the TLS handshake failed, and what to do, for the three usual causes."""
    if isinstance(e, ssl.SSLCertVerificationError):
        code = e.verify_code
        if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return (
                f"the server's TLS certificate is not for {smtp.host} ({e.verify_message}); "
                "use the host name the certificate names in LISTKIT_SMTP_URL"
            )
        if code in _UNTRUSTED:
            return (
                f"the server's TLS certificate is not trusted ({e.verify_message}); if it "
                "uses a private CA, set LISTKIT_SMTP_CA to that CA's PEM file"
            )
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"the server's TLS certificate has expired ({e.verify_message})"
        return f"the server's TLS certificate was refused ({e.verify_message})"
    reason = (e.reason or str(e)).upper()
    if smtp.tls == "tls" and any(
        r in reason for r in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH")
    ):
        return (
            f"port {smtp.port} does not speak TLS from the start (it answered in plain "
            "text): for a STARTTLS port such as 587 use smtp+starttls://, smtps:// is for "
            "implicit TLS (port 465)"
        )
    return f"TLS failed: {e.reason or e}"


async def connect(smtp: SMTPSettings) -> aiosmtplib.SMTP:
    """An open, authenticated connection; SendError for what retrying cannot fix."""
    client = _smtp_client(smtp)
    where = f"LISTKIT_SMTP_URL ({smtp.masked()})"
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()  # so that supports_extension() answers before the first MAIL
        if smtp.username:
            await _login(client, smtp, where)
    except SendError:
        client.close()
        raise
    except aiosmtplib.SMTPConnectResponseError:
        client.close()
        raise  # a greeting refused (421 busy, ...): retried
    except aiosmtplib.SMTPConnectTimeoutError as e:
        client.close()
        if smtp.tls != "tls" and "ready message" in str(e):
            # Connected, and silence: a port that waits for a TLS handshake
            # first (465) never greets in plain text; retrying cannot help.
            raise SendError(
                f"{where}: connected, but the server sent no greeting within "
                f"{smtp.timeout:g} s; if port {smtp.port} expects TLS from the start "
                "(implicit TLS, usually 465), use smtps://"
            ) from None
        raise
    except aiosmtplib.SMTPResponseException as e:
        # aiosmtplib's STARTTLS refused: the only reply its connect() checks
        # besides the greeting (handled above), EHLO (rare) and AUTH (ours).
        client.close()
        if smtp.tls == "starttls" and not isinstance(e, aiosmtplib.SMTPHeloError):
            raise SendError(
                f"{where}: the server refused STARTTLS: {e.code} {e.message}; nothing is "
                "sent without it"
            ) from None
        raise
    except aiosmtplib.SMTPNotSupported as e:
        client.close()
        raise SendError(f"{where}: {e}") from None
    except (aiosmtplib.SMTPException, OSError) as e:
        client.close()
        tls_error = _ssl_error(e)
        if tls_error is not None:
            raise SendError(f"{where}: {_tls_problem(smtp, tls_error)}") from None
        if "STARTTLS" in str(e).upper() and "not supported" in str(e).lower():
            raise SendError(
                f"{where}: the server does not offer STARTTLS; use smtps:// for implicit "
                "TLS, or smtp:// only on a trusted local network"
            ) from None
        raise
    return client


async def _login(client: aiosmtplib.SMTP, smtp: SMTPSettings, where: str) -> None:
    """One AUTH attempt with one mechanism: a wrong password is tried once, not per
    mechanism (servers count failures, and fail2ban or the provider locks the account)."""
    if not client.supports_extension("auth"):
        hint = (
            ""
            if client.get_transport_info("sslcontext")
            else ("; many servers offer AUTH only over TLS: try smtp+starttls:// or smtps://")
        )
        raise SendError(f"{where}: the server does not offer AUTH{hint}")
    offered = [m for m in _AUTH_MECHANISMS if m in client.server_auth_methods]
    if not offered:
        raise SendError(
            f"{where}: the server offers no AUTH mechanism listkit knows "
            f"(it offers {', '.join(client.server_auth_methods) or 'none'}; "
            "listkit knows PLAIN, LOGIN, CRAM-MD5)"
        )
    method = getattr(client, "auth_" + offered[0].replace("-", ""))
    try:
        await method(smtp.username, smtp.password or "")
    except aiosmtplib.SMTPAuthenticationError as e:
        raise SendError(
            f"{where}: the server refused the login for user {smtp.username!r}: "
            f"{e.code} {e.message}; check the user name and password (listkit tried once, "
            "to keep the account from being locked)"
        ) from None


@dataclass
class RunSummary:
    campaign: str
    this_run: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    recovered: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    topped_up: tuple[int, int] | None = None  # --top-up: (newcomers, of which held out)

    @property
    def complete(self) -> bool:
        """Every message ended sent, held out or skipped."""
        return all(self.totals.get(s, 0) == 0 for s in ("pending", "sending", "deferred"))

    @property
    def ok(self) -> bool:
        bad = ("pending", "sending", "deferred", "failed", "unknown")
        return self.stopped is None and all(self.totals.get(s, 0) == 0 for s in bad)


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


# The pause between failed connection attempts; tests record it instead of waiting.
backoff_sleep = asyncio.sleep


class RateLimiter:
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
    ):
        self.compose_processes = compose_processes
        self.bounce_address = bounce_address
        self.variant = variant
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
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listkit-db")
        self.mark_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="listkit-marks")
        self.pool = None
        if self.compose_processes:
            self.pool = ProcessPoolExecutor(
                max_workers=self.compose_processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_pool_init,
                initargs=(
                    os.getpid(),
                    self.composer.settings,
                    self.composer.offers_dir,
                    self.campaign.slug,
                    self.composer.offer.slug,
                ),
            )
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
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        if self.fatal is not None:
            raise self.fatal
        return self.counts

    async def _producer(self) -> None:
        remaining = self.limit
        loop = asyncio.get_running_loop()
        while self.stopped is None and (remaining is None or remaining > 0):
            size = self.batch if remaining is None else min(self.batch, remaining)
            rows: list[Claimed] = await self.db(
                claim,
                self.conn_db,
                self.campaign_id,
                self.run_id,
                size,
                self.variant,
                self.declined,
            )
            if not rows:
                break
            if remaining is not None:
                remaining -= len(rows)
            if self.pool is not None:
                # Rendering runs on the other core while the workers send the
                # previous batch from the queue.
                built = await loop.run_in_executor(self.pool, _pool_compose, rows)
            elif self.composer.signer is not None:
                # Signing (RSA) is the costly step: keep it off the event loop.
                built = await loop.run_in_executor(None, compose_rows, self.composer, rows)
            else:
                built = compose_rows(self.composer, rows)
            for i, (row, (data, error)) in enumerate(zip(rows, built, strict=True)):
                if self.stopped is not None:
                    for left in rows[i:]:
                        self._result(Result(left.id, "pending"))
                    break
                if error is not None:
                    self._result(Result(row.id, "failed", None, error, row.attempts))
                    continue
                await self.queue.put((row, data))
        for _ in range(self.campaign.concurrency):
            await self.queue.put(None)

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
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                row, data = item
                if self.stopped is not None:
                    self._result(Result(row.id, "pending"))
                    continue
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect_or_release(row)
                        if client is None:
                            continue
                    await self.limiter.wait()
                    result, keep = await self._deliver(client, row, data)
                except Exception as e:
                    # Unexpected: stop. The row stays 'sending' at the phase it reached,
                    # and the next run resolves it from there.
                    self.fatal = self.fatal or e
                    self.stopped = self.stopped or f"internal error: {type(e).__name__}: {e}"
                    continue
                self._result(result)
                if not keep:
                    client.close()
                    client = None
        finally:
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
                client = Connection(await connect(self.smtp), self.smtp.timeout)
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

    async def _deliver(self, conn: Connection, row: Claimed, data: bytes) -> tuple[Result, bool]:
        """Send one message (``data`` in wire form); (result, keep the connection)."""
        attempts = row.attempts
        # With a bounce address, the envelope names the delivery (VERP).
        envelope = (
            verp_address(self.bounce_address, row.token)
            if self.bounce_address
            else self.sender_address
        )
        recipient, sender = row.email, envelope
        if not conn.smtputf8:
            # Without SMTPUTF8 an internationalised domain goes in A-labels;
            # only a non-ASCII local part needs the extension.
            recipient = ascii_domain(recipient) or recipient
            sender = ascii_domain(sender) or sender
            if not (recipient.isascii() and sender.isascii()):
                which = "sender's" if recipient.isascii() else "recipient's"
                reply = (
                    f"the {which} address has a non-ASCII local part and the server does "
                    "not offer SMTPUTF8"
                )
                return Result(row.id, "failed", None, reply, attempts), True
        utf8 = not (recipient.isascii() and sender.isascii())
        if conn.max_size is not None and len(data) > conn.max_size:
            # RFC 1870: refused before anything is uploaded, for this message only.
            reply = (
                f"the message is {len(data):,} bytes, over the server's limit of "
                f"{conn.max_size:,} bytes (SIZE); make it smaller (images, attachments)"
            )
            return Result(row.id, "failed", None, reply, attempts), True
        try:
            mail = b"MAIL FROM:" + smtp_path(sender, utf8)
            rcpt = b"RCPT TO:" + smtp_path(recipient, utf8) + b"\r\n"
        except ValueError as e:
            return Result(row.id, "failed", None, str(e), attempts), True
        if conn.size is not None:
            mail += b" SIZE=%d" % len(data)
        commands = (mail + (b" SMTPUTF8\r\n" if utf8 else b"\r\n"), rcpt, b"DATA\r\n")
        # Ask for the durable 'data' mark now, so that its commit overlaps the
        # round trips of the envelope; the content still waits for it. (The
        # DATA command itself may go first: without the content and its final
        # dot the server has no message.)
        mark = self._mark_data(row.id)
        try:
            if conn.pipelining:
                futures = conn.send(b"".join(commands), len(commands))
                replies = [await conn.reply(f) for f in futures]
            else:
                replies = []
                for step, command in enumerate(commands):
                    replies.append(await conn.reply(conn.send(command)[0]))
                    if replies[-1].code not in _ENVELOPE_OK[step]:
                        break
        except (TimeoutError, ConnectionLost) as e:
            _settle(mark)
            conn.abort()
            reply = f"connection lost before DATA: {self._lost(e)}"
            return Result(row.id, "deferred", None, reply, attempts), False
        for step, reply in enumerate(replies):
            if reply.code in _ENVELOPE_OK[step]:
                continue
            _settle(mark)
            if not 400 <= reply.code < 600:
                # Neither acceptance nor refusal: the server is out of step with
                # us. Nothing of the message went out; drop the connection.
                conn.abort()
                text = f"unexpected reply to {_COMMANDS[step]}: {reply.code} {reply.message}"
                return Result(row.id, "deferred", None, text[:500], attempts), False
            if replies[-1].code == 354:  # DATA accepted after a refusal: abandon it
                conn.abort()
            keep = reply.code != 421 and conn.is_connected and await self._rset(conn)
            if step == 0 and reply.code >= 500:
                self.stopped = (
                    f"the server refused the sender {envelope}: {reply.code} {reply.message}"
                )
                self.fatal = self.fatal or SendError(
                    f"{'LISTKIT_BOUNCE_ADDRESS' if self.bounce_address else 'LISTKIT_FROM'}: "
                    f"{self.stopped}"
                )
                return Result(row.id, "pending"), keep
            return self._refusal(row, reply.code, reply.message, _COMMANDS[step]), keep
        # The server waits for the content. Stopping now means closing the
        # connection without the final dot, which abandons the message.
        try:
            go = await mark
        except SendError:
            conn.abort()
            return Result(row.id, "pending"), False
        if not go:
            conn.abort()
            reply = "unsubscribed or suppressed while the campaign was sending"
            return Result(row.id, "skipped", None, reply, attempts), False
        try:
            end = await conn.reply(conn.send(data)[0])
        except (TimeoutError, ConnectionLost) as e:
            conn.abort()
            reply = f"no reply to the final dot: {self._lost(e)}"
            return Result(row.id, "unknown", None, reply[:500], attempts), False
        if 200 <= end.code < 300:
            return Result(row.id, "sent", end.code, end.message[:500], attempts), True
        if 400 <= end.code < 600:
            # The server answered: a definite refusal of the message.
            return self._refusal(row, end.code, end.message, "the final dot"), (
                end.code != 421 and conn.is_connected
            )
        # Neither accepted nor refused: the server may have the message.
        conn.abort()
        reply = f"unexpected reply to the final dot: {end.code} {end.message}"
        return Result(row.id, "unknown", None, reply[:500], attempts), False

    def _lost(self, e: BaseException) -> str:
        """Why a reply did not come: TimeoutError has no text of its own."""
        if isinstance(e, TimeoutError):
            return f"timed out after {self.smtp.timeout:g} s"
        return str(e) or type(e).__name__

    @staticmethod
    async def _rset(conn: Connection) -> bool:
        """Reset the transaction after a refusal; False if the connection is no good."""
        try:
            reply = await conn.command(b"RSET")
        except (TimeoutError, ConnectionLost):
            conn.abort()
            return False
        return reply.code == 250 and conn.is_connected

    def _refusal(self, row: Claimed, code: int, message: str, command: str) -> Result:
        text = f"{message[:500]} (reply to {command})"
        if code >= 500:
            return Result(
                row.id,
                "failed",
                code,
                text,
                row.attempts,
                hard_bounce=classify(code, message, command=command) == HARD,
                email=row.email,
            )
        return Result(row.id, "deferred", code, text, row.attempts)


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


def compose_rows(composer: Composer, rows: list[Claimed]) -> list[tuple[bytes | None, str | None]]:
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
        track_clicks=settings.clicks_tracked(),
    )


def _pool_compose(rows: list[Claimed]) -> list[tuple[bytes | None, str | None]]:
    assert _POOL_COMPOSER is not None
    return compose_rows(_POOL_COMPOSER, rows)


def _settle(future: asyncio.Future) -> None:
    """Let a mark we no longer wait for finish quietly."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


@dataclass
class Prepared:
    campaign: Campaign
    composer: Composer
    smtp: SMTPSettings
    sender_address: str
    bounce_address: str | None = None
    # One composer per offer the campaign sends (its variants), by offer slug.
    composers: dict[str, Composer] = field(default_factory=dict)

    @property
    def expires(self) -> str | None:
        """The earliest expiry among the campaign's offers."""
        dates = [c.offer.expires for c in self.composers.values() if c.offer.expires]
        return min(dates) if dates else None


def prepare(ws: Workspace, slug: str, *, recorded: bool = True) -> Prepared:
    """Everything a send needs, checked before any connection is opened.

    ``recorded=False`` (test and dry-run messages, which have no delivery) links
    straight to the shop's tracked URLs: a click link of a token that is in no
    delivery would answer 404.
    """
    campaign = load_campaign(ws.campaigns_dir, slug)
    offer = load_offer(ws.offers_dir, campaign.offer)
    tracked = ws.settings.clicks_tracked() and recorded
    composer = Composer(
        offer, ws.settings, campaign=slug, offers_dir=ws.offers_dir, track_clicks=tracked
    )
    composers = {offer.slug: composer}
    for variant in campaign.variants:
        if variant not in composers:
            composers[variant] = Composer(
                load_offer(ws.offers_dir, variant),
                ws.settings,
                campaign=slug,
                offers_dir=ws.offers_dir,
                track_clicks=tracked,
            )
    smtp = ws.settings.smtp()
    _name, sender_address = ws.settings.sender_address()
    try:
        # Checked here, once: found per message, it would fail every recipient.
        smtp_path(sender_address, True)
    except ValueError:
        raise ConfigError(
            f"LISTKIT_FROM: {sender_address!r} cannot be the envelope sender (MAIL FROM): a "
            "space, a control character, < or > is not allowed there; use a plain address "
            "such as you@example.com"
        ) from None
    for list_slug in (*campaign.lists, *campaign.exclude_lists):
        get_list(ws.db, list_slug)
    bounces = bounce_address(ws.settings.bounce_address)
    return Prepared(campaign, composer, smtp, sender_address, bounces, composers)


def send_campaign(
    ws: Workspace,
    slug: str,
    *,
    limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    batch: int = 200,
    prepared: Prepared | None = None,
    newcomers: bool = False,
) -> RunSummary:
    """Send (or resume) a campaign under the workspace's send lock.

    ``newcomers`` (``--top-up``): first add to the outbox of a campaign already
    sent whoever is in its audience now and has no row in it yet.
    """
    started = time.monotonic()
    with send_lock(ws.settings.db_path.parent):
        p = prepared or prepare(ws, slug)
        db = ws.db
        check_ready(db, p.campaign, p.expires)
        row = campaign_row(db, slug)
        if row is not None and row["state"] == "testing":
            _due, when = rest_due(db, p.campaign, datetime.now(UTC))
            raise ListkitError(
                f"campaign {slug} is testing its variants: the rest gets the winner by "
                f"`listkit send --due` from {when}"
            )
        offer = p.composer.offer
        where = {"domain": p.composer.domain, "coupon_base": p.composer.coupon_base}
        summary = RunSummary(campaign=slug)
        if newcomers:
            if row is None or row["started"] is None:
                raise ListkitError(
                    f"campaign {slug} has not been sent yet, so it has no newcomers: "
                    f"send it with `listkit send {slug}`"
                )
            cid = row["id"]
            summary.topped_up = top_up(db, cid, p.campaign, **where)
        else:
            cid = register(db, p.campaign, digest=offer.digest, coupon=offer.coupon)
            build_outbox(db, cid, p.campaign, **where)
        # Marks left by a run that died first, so that its rows whose content
        # may be out become unknown, not pending.
        fold_marks(db, ws.settings.db_path)
        summary.recovered = recover(db, cid)
        set_state(db, cid, "sending")
        before = counts(db, cid)
        if on_start is not None:
            due = before["pending"] + before["deferred"]
            on_start(due if limit is None else min(limit, due))
        due = before["pending"] + before["deferred"]
        if limit is not None:
            due = min(due, limit)
        # A campaign testing offers sends one variant's rows at a time, each
        # with its own offer's composer.
        parts = [(v, p.composers[v]) for v in p.campaign.variants] or [(None, p.composer)]
        run = None
        try:
            for variant, composer in parts:
                left = None if limit is None else limit - sum(summary.this_run.values())
                if left is not None and left <= 0:
                    break
                run = Run(
                    compose_processes=1
                    if due >= POOL_THRESHOLD and (os.cpu_count() or 1) > 1
                    else 0,
                    db_path=ws.settings.db_path,
                    campaign_id=cid,
                    campaign=p.campaign,
                    composer=composer,
                    smtp=p.smtp,
                    sender_address=p.sender_address,
                    bounce_address=p.bounce_address,
                    limit=left,
                    batch=batch,
                    on_result=on_result,
                    variant=variant,
                )
                for state, n in run_loop(run.run()).items():
                    summary.this_run[state] = summary.this_run.get(state, 0) + n
                if run.stopped:
                    break
        except sqlite3.Error as e:
            # The database refused a write mid-run (locked past the timeout,
            # disk full): nothing more was sent. Rows not yet recorded stay
            # 'sending' at the phase they reached, and the next run resolves
            # them (pending again, or unknown if their content may be out).
            raise SendError(
                f"{describe_db_error(ws.settings.db_path, e)}; sending stopped, and the next "
                f"`listkit send {slug}` resumes every message not recorded as sent"
            ) from None
        finally:
            summary.stopped = run.stopped if run is not None else None
            summary.totals = counts(db, cid)
            if summary.complete:
                # Test-then-send: the rest waits for the winner (`send --due`).
                set_state(db, cid, "testing" if summary.totals.get("reserved") else "done")
        summary.elapsed = time.monotonic() - started
        return summary


@dataclass
class DueOutcome:
    """What `send --due` did with one campaign."""

    campaign: str
    action: str  # sent | missed | locked | error
    summary: RunSummary | None = None
    message: str = ""


def send_due(
    ws: Workspace, *, limit: int | None = None, at: datetime | None = None
) -> list[DueOutcome]:
    """Send every campaign whose send_at has come; mark those later than max_late missed.

    Campaigns without send_at, not yet due, done or missed are left alone; a
    missed one whose send_at has been edited since is scheduled again. A
    campaign already sending (or reopened by `listkit retry`) is resumed even
    past max_late: it started in time.
    """
    at = at or datetime.now(UTC)
    outcomes: list[DueOutcome] = []
    for slug in campaign_slugs(ws.campaigns_dir):
        try:
            campaign = load_campaign(ws.campaigns_dir, slug)
        except ListkitError as e:
            outcomes.append(DueOutcome(slug, "error", message=str(e)))
            continue
        why = ""
        if campaign.follows:
            try:
                expires = min(
                    (e for o in campaign.offers if (e := load_offer(ws.offers_dir, o).expires)),
                    default=None,
                )
            except ListkitError as e:
                outcomes.append(DueOutcome(slug, "error", message=str(e)))
                continue
            status, why = followup_status(ws.db, campaign, at, expires)
        else:
            status = due_status(campaign, at)
        row = campaign_row(ws.db, slug)
        if rescheduled(row, campaign):
            reschedule(ws.db, row["id"], campaign)
            row = campaign_row(ws.db, slug)
        state = row["state"] if row else None
        if state == "testing":  # test-then-send, sent by hand or not: the rest goes from here
            due, _when = rest_due(ws.db, campaign, at)
            if not due:
                continue
            try:
                with send_lock(ws.root):
                    pick = release_rest(ws.db, campaign)
            except AlreadyRunning as e:
                outcomes.append(DueOutcome(slug, "locked", message=str(e)))
                break
            chosen = f"{slug}: the rest ({pick['released']}) gets {pick['offer']}, {pick['why']}"
            try:
                outcomes.append(
                    DueOutcome(slug, "sent", send_campaign(ws, slug, limit=limit), message=chosen)
                )
            except AlreadyRunning as e:
                outcomes.append(DueOutcome(slug, "locked", message=str(e)))
                break
            except ListkitError as e:
                outcomes.append(DueOutcome(slug, "error", message=str(e)))
            continue
        if state in ("done", "missed") or status in ("manual", "waiting"):
            continue
        if status == "missed" and state != "sending":
            cid = register(ws.db, campaign, digest="", coupon=None)
            set_state(ws.db, cid, "missed")
            if why:
                outcomes.append(DueOutcome(slug, "missed", message=why))
                continue
            # Whole minutes: the seconds a cron run takes are noise here.
            minutes = round((at - campaign.send_at).total_seconds() / 60)
            late = format_duration(timedelta(minutes=minutes))
            outcomes.append(
                DueOutcome(
                    slug,
                    "missed",
                    message=f"send_at {campaign.send_at.isoformat()} was {late} ago, more than "
                    f"max_late {format_duration(campaign.max_late)}; not sent",
                )
            )
            continue
        try:
            outcomes.append(DueOutcome(slug, "sent", send_campaign(ws, slug, limit=limit)))
        except AlreadyRunning as e:
            outcomes.append(DueOutcome(slug, "locked", message=str(e)))
            break
        except SendError as e:
            # The server or the database refused us (login, TLS, sender, disk):
            # the next campaign would meet the same refusal; a wrong password
            # must not be tried once per campaign.
            outcomes.append(DueOutcome(slug, "error", message=f"{e}; later campaigns wait"))
            break
        except ListkitError as e:
            outcomes.append(DueOutcome(slug, "error", message=str(e)))
    return outcomes


async def send_message(smtp: SMTPSettings, sender: str, to: str, data: bytes) -> str:
    """Send one composed message now, over its own connection to ``smtp``; the server's
    reply to the final dot (``"250 ..."``). Records nothing: `send --test-to` and the
    service's signup confirmations use it. Any failure is a ``SendError`` naming
    ``LISTKIT_SMTP_URL`` (password masked) or the server's refusal.
    """
    where = f"LISTKIT_SMTP_URL ({smtp.masked()})"
    try:
        client = await connect(smtp)
    except (aiosmtplib.SMTPException, OSError) as e:  # SendError passes through
        raise SendError(f"{where}: cannot connect: {e or type(e).__name__}") from None
    if not client.supports_extension("smtputf8"):
        # As in a run: an internationalised domain goes in A-labels.
        to, sender = ascii_domain(to) or to, ascii_domain(sender) or sender
        if not (to.isascii() and sender.isascii()):
            with contextlib.suppress(Exception):
                await client.quit()
            raise SendError(
                f"{to if not to.isascii() else sender}: a non-ASCII local part needs a "
                "server that offers SMTPUTF8, and this one does not"
            )
    try:
        await client.mail(sender)
        await client.rcpt(to)
        response = await client.data(data)
        return f"{response.code} {response.message}"
    except aiosmtplib.SMTPResponseException as e:
        raise SendError(f"the server refused the message: {e.code} {e.message}") from None
    except (aiosmtplib.SMTPException, OSError) as e:
        raise SendError(f"{where}: the message was not sent: {e or type(e).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await client.quit()


def send_test(ws: Workspace, slug: str, to: str) -> tuple[Composed, str]:
    """Send one message, rendered for a sample of the audience, to ``to``; record nothing."""
    address = normalize_address(to)
    p = prepare(ws, slug, recorded=False)
    sample = next(iter_audience(ws.db, p.campaign), None)
    subscriber, list_slug, title = sample or (dict(SAMPLE_SUBSCRIBER), p.campaign.lists[0], None)
    composed = p.composer.compose(
        subscriber={**subscriber, "email": address},
        list_slug=list_slug,
        list_title=title,
        token=new_token(),
    )
    reply = asyncio.run(send_message(p.smtp, p.sender_address, address, composed.data))
    return composed, reply


def dry_run(
    ws: Workspace, slug: str, directory: Path, limit: int | None = None
) -> tuple[int, list[Problem], int]:
    """Write one .eml per recipient the campaign would mail into ``directory``;
    send and record nothing (the held-out group gets no message, as in a send).

    A recipient whose message cannot be built is listed, never a reason to stop:
    (messages written, problems, held out).
    """
    p = prepare(ws, slug, recorded=False)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"--dry-run {directory}: cannot create the folder ({e.strerror})"
        ) from None
    written, problems, held = 0, [], Counter()
    audience = without_holdout(p.campaign, iter_audience(ws.db, p.campaign), held)
    for subscriber, list_slug, title in audience:
        if limit is not None and written + len(problems) >= limit:
            break
        composer = p.composer
        if p.campaign.variants:  # an offer test: the offer of this recipient's draw
            c = p.campaign
            composer = p.composers[assign_variant(slug, subscriber["key"], c.variants, c.split)]
        try:
            composed = composer.compose(
                subscriber=subscriber, list_slug=list_slug, list_title=title, token=new_token()
            )
        except (TemplateError, HeaderInjection) as e:
            problems.append(Problem(subscriber["email"], str(e)))
            continue
        safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", subscriber["email"])[:100]
        write_private(directory / f"{written + 1:06d}-{safe}.eml", composed.data)
        written += 1
    return written, problems, held["held_out"]
