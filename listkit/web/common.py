"""What every route shares: database access, size-limited bodies, forms, client address.

Database: reads run in the thread pool on a connection per thread (WAL lets
them run beside writes). Writes go to one writer thread that runs each queued
write function in a savepoint of one ``BEGIN IMMEDIATE`` transaction and
commits the group before any of their callers is answered: a crash loses
nothing that was answered 2xx, and a burst of requests shares one fsync. A
write function that raises rolls back only its own savepoint; its caller gets
the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from sqlite_utils import Database
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from listkit.db import begin_immediate, open_db
from listkit.errors import InputError
from listkit.payloads import loads_object

T = TypeVar("T")

# Bodies larger than this are refused with 413 before they are read in full.
MAX_BODY = 256 * 1024
# How many queued writes share one commit at the most.
MAX_GROUP = 256
# After each commit the writer leaves the write lock free this long (collecting
# the next group meanwhile): under a stream of requests it would otherwise hold
# the lock nearly all the time, and a `listkit send` in another process, which
# polls for the lock, would wait instead of sending. A send commits a group of
# marks (one per SMTP connection) before those messages' content goes out, so
# its speed follows how many commits it makes per gap: 12 ms leaves room for
# several (4 ms left it about one; bench/serve.py).
GROUP_PAUSE = 0.012
# The writer's connection never checkpoints the WAL itself (a checkpoint run by
# a COMMIT keeps that group's callers waiting while it copies pages into the
# database and fsyncs it): a thread of its own checkpoints (PASSIVE: it waits
# for nobody and nobody waits for it) after this many group commits.
CHECKPOINT_EVERY = 32


class WebDB:
    """The database as the web app uses it: thread-local readers, one group-committing writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._checkpoint = threading.Event()

    def _connection(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.path, create=False)
        return db

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` on this thread's connection, in the thread pool."""
        return await run_in_threadpool(lambda: fn(self._connection(), *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` inside a write transaction; returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._ensure_writer()
        self._queue.put((fn, args, loop, future))
        return await future

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._run, name="listkit-writer", daemon=True
                )
                self._writer.start()
                threading.Thread(
                    target=self._checkpoints, name="listkit-checkpoint", daemon=True
                ).start()

    def _checkpoints(self) -> None:
        conn = None  # opened at the first checkpoint: an app that writes little never needs it
        while True:
            self._checkpoint.wait()
            self._checkpoint.clear()
            with contextlib.suppress(Exception):  # the next one catches up
                conn = conn or open_db(self.path, create=False).conn
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _run(self) -> None:
        db = open_db(self.path, create=False)
        conn = db.conn
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        commits = 0
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_GROUP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            results: list[tuple[bool, Any]] = []
            try:
                begin_immediate(conn)
                for fn, args, _loop, _future in batch:
                    conn.execute("SAVEPOINT write")
                    try:
                        value = fn(db, *args)
                    except BaseException as e:  # handed to its caller
                        conn.execute("ROLLBACK TO write")
                        conn.execute("RELEASE write")
                        results.append((False, e))
                    else:
                        conn.execute("RELEASE write")
                        results.append((True, value))
                conn.execute("COMMIT")
                commits += 1
                if commits % CHECKPOINT_EVERY == 0:
                    self._checkpoint.set()
            except BaseException as e:  # the whole group failed: tell everyone
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                results = [(False, e)] * len(batch)
            # One wake-up per event loop for the whole group, not one per caller.
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for (ok, value), (_fn, _args, loop, future) in zip(results, batch, strict=True):
                by_loop.setdefault(loop, []).append((future, ok, value))
            for loop, settled in by_loop.items():
                # A caller whose loop has closed (shutting down) is gone: nobody to tell.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, settled)
            time.sleep(GROUP_PAUSE)


def _settle(settled: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def json_object(body: bytes) -> dict:
    """The body as a JSON object within ``payloads``' limits; 400 saying why not."""
    try:
        return loads_object(body)
    except InputError as e:
        raise HTTPException(400, f"Bad payload: {e}.") from None


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPException(400, "Bad Content-Length.")
        if int(declared) > limit:
            raise HTTPException(413, "Request body too large.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, "Request body too large.")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the server closed a body that did not arrive in
        # time (listkit.web.server): nobody to answer, nothing to log as an error.
        raise HTTPException(408, "The request did not arrive in time.") from None
    return b"".join(chunks)


async def read_form(request: Request, limit: int = MAX_BODY) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a
    repeated field wins); 415 for any other content type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise HTTPException(415, "Expected a form (application/x-www-form-urlencoded).")
    body = await read_body(request, limit)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "The form is not UTF-8.") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=100))
    except ValueError:
        raise HTTPException(400, "Too many form fields.") from None


def client_ip(request: Request) -> str | None:
    """The client's address; behind a proxy, uvicorn's ``--forwarded-allow-ips``
    decides whether ``X-Forwarded-For`` is believed."""
    return request.client.host if request.client else None
