"""The SMTP transaction on an open connection, pipelined where the server allows.

aiosmtplib opens the connection (TCP or implicit TLS, EHLO, STARTTLS, AUTH:
see ``sender.connect``); ``Connection`` then takes over its transport for the
transactions. aiosmtplib waits for each reply before the next command, so a
message costs four round trips (MAIL, RCPT, DATA, the content). With
PIPELINING (RFC 2920), advertised by the server, MAIL, RCPT and DATA go out
in one write and the content after the 354: two round trips, and half the
system calls and wake-ups. Without PIPELINING each command waits for its
reply, as RFC 5321 requires.

The content is sent in wire form, prepared where the message is rendered
(``wire_form``): CRLF line ends, leading dots doubled, the final dot added.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import NamedTuple

import aiosmtplib

MAX_REPLY = 32 * 1024  # a reply longer than this is a broken server
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# What an address may not contain in a MAIL or RCPT command.
_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")
# A reply line: three ASCII digits, then a space, a hyphen or the line's end
# (RFC 5321 4.2). int() would also take "2_0", " 25" or "+25".
_REPLY_CODE = re.compile(rb"[0-9]{3}(?:[ -]|$)")


class Reply(NamedTuple):
    code: int
    message: str


class ConnectionLost(Exception):
    """The connection closed or broke while a reply was awaited."""


def wire_form(message: bytes) -> bytes:
    """``message`` as DATA content: CRLF line ends, dot-stuffed, ending with CRLF.CRLF."""
    # Messages listkit builds have CRLF line ends and rarely a line starting
    # with a dot: counting (in C) skips the two regex passes over every message.
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    return message + b".\r\n"


def path(address: str, utf8: bool) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO; ValueError if it could break the command."""
    if _UNSAFE.search(address):
        raise ValueError(f"address {address!r} contains characters not allowed in SMTP")
    return b"<" + address.encode("utf-8" if utf8 else "ascii") + b">"


class _Replies(asyncio.Protocol):
    """Parses replies off the transport and hands them to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.buffer = bytearray()
        self.lines: list[bytes] = []  # of a multi-line reply still arriving
        self.waiters: deque[asyncio.Future[Reply]] = deque()
        self.lost: BaseException | None = None
        self.transport: asyncio.Transport | None = None

    def expect(self) -> asyncio.Future[Reply]:
        future = self.loop.create_future()
        if self.lost is not None:
            future.set_exception(ConnectionLost(str(self.lost)))
            future.exception()  # retrieved: the caller may stop awaiting on another error
        else:
            self.waiters.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            self.lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                lines, self.lines = self.lines, []
                self._deliver(lines)
        if start:
            del buffer[:start]
        if len(buffer) + sum(map(len, self.lines)) > MAX_REPLY:
            self._break("the server sent an over-long reply")

    def _deliver(self, lines: list[bytes]) -> None:
        if (
            not all(_REPLY_CODE.match(line) for line in lines)
            or len({line[:3] for line in lines}) != 1
        ):
            self._break(f"malformed reply {lines[-1][:80]!r}")
            return
        code = int(lines[0][:3])
        text = "\n".join(x[4:].strip().decode("utf-8", "replace") for x in lines)
        if self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(Reply(code, text))
        # A reply nobody asked for is dropped.

    def _break(self, reason: str) -> None:
        """The server broke the protocol: fail every waiter and drop the connection."""
        self._fail(ConnectionLost(reason))
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        self.lost = self.lost or exc
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionLost(str(exc)))
                waiter.exception()

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "connection closed"))


class Connection:
    """An open SMTP connection, taken over from aiosmtplib after its set-up."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float | None):
        self.pipelining = client.supports_extension("pipelining")
        self.smtputf8 = client.supports_extension("smtputf8")
        # RFC 1870: "SIZE" with the largest message the server takes (0 or
        # nothing: no fixed limit). None when the server does not offer SIZE.
        self.size: int | None = None
        self.max_size: int | None = None
        if client.supports_extension("size"):
            self.size = 0
            limit = (client.esmtp_extensions.get("size") or "").strip()
            if limit.isdigit() and int(limit) > 0:
                self.max_size = int(limit)
        self.timeout = timeout
        transport = client.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("the connection closed as it opened")
        self.replies = _Replies(asyncio.get_running_loop())
        self.replies.transport = transport  # type: ignore[assignment]
        transport.set_protocol(self.replies)
        self.transport = transport

    @property
    def is_connected(self) -> bool:
        return self.replies.lost is None and not self.transport.is_closing()

    def send(self, data: bytes, replies: int = 1) -> list[asyncio.Future[Reply]]:
        """Write ``data`` (one or more commands) and return a future per expected reply."""
        futures = [self.replies.expect() for _ in range(replies)]
        if self.replies.lost is None:
            self.transport.write(data)  # type: ignore[attr-defined]
        return futures

    async def reply(self, future: asyncio.Future[Reply]) -> Reply:
        """The awaited reply; TimeoutError or ConnectionLost otherwise."""
        if future.done():  # pipelined replies often arrive together: no timer needed
            return future.result()
        async with asyncio.timeout(self.timeout):
            return await future

    async def command(self, line: bytes) -> Reply:
        (future,) = self.send(line + b"\r\n")
        return await self.reply(future)

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        """Close at once, discarding anything unsent: a DATA in progress is abandoned."""
        self.transport.abort()

    async def quit(self) -> None:
        try:
            if self.is_connected:
                (future,) = self.send(b"QUIT\r\n")
                async with asyncio.timeout(2):
                    await future
        except (TimeoutError, ConnectionLost):
            pass
        finally:
            self.close()
