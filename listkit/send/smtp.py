"""SMTP: the one transaction every message goes through.

``connect.open_connection`` opens the connection (with aiosmtplib);
``Connection`` takes over its transport for the transactions, and
``transact`` is the transaction itself.

The rule: campaigns, `send --test-to` and signup confirmations
(``single.send_one``) all go through ``transact``, with the same checks
(SMTPUTF8 and its one downgrade, SIZE, safe paths) and the same outcomes.

aiosmtplib waits for each reply before the next command, so a message costs
four round trips (MAIL, RCPT, DATA, the content). With PIPELINING (RFC 2920),
advertised by the server, MAIL, RCPT and DATA go out in one write and the
content after the 354: two round trips, and half the system calls and
wake-ups. Without PIPELINING each command waits for its
reply, as RFC 5321 requires.

A run sending many messages on one connection goes further: the content of
one message and the envelope of the next go in one write (RFC 2920 3.1: the
content may be the first "command" of a group, and DATA the last), so that a
message costs one write and one round trip. The next message's content still
waits for its own 354 and its own mark (``ready``, asked for once the message
before it has its outcome, as it would be without this); if the connection
does not outlive the first message, nothing of the second's content went out,
and it is sent again on another connection (``Ahead.sent`` says whether its
envelope went).

The content is sent in wire form, prepared where the message is rendered
(``wire_form``): CRLF line ends, leading dots doubled, the final dot added.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import aiosmtplib

from listkit.addresses import ascii_domain
from listkit.errors import SendError

MAX_REPLY = 32 * 1024  # a reply longer than this is a broken server
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# What an address may not contain in a MAIL or RCPT command.
_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")
# A reply line: three ASCII digits, then a space, a hyphen or the line's end
# (RFC 5321 4.2). int() would also take "2_0", " 25" or "+25".
_REPLY_CODE = re.compile(rb"[0-9]{3}(?:[ -]|$)")
# The replies that let a transaction go on: to MAIL FROM, RCPT TO and DATA.
_ENVELOPE_OK = ((250,), (250, 251), (354,))
_COMMANDS = ("MAIL FROM", "RCPT TO", "DATA")


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
        if len(lines) == 1:  # most replies: no set, no join
            line = lines[0]
            if not _REPLY_CODE.match(line):
                self._break(f"malformed reply {line[:80]!r}")
                return
            code, text = int(line[:3]), line[4:].strip().decode("utf-8", "replace")
        elif (
            not all(_REPLY_CODE.match(line) for line in lines)
            or len({line[:3] for line in lines}) != 1
        ):
            self._break(f"malformed reply {lines[-1][:80]!r}")
            return
        else:
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


def _expire(future: asyncio.Future[Reply]) -> None:
    """A reply that did not come in time: its waiter fails with TimeoutError (a reply
    that comes later is dropped, as one nobody asked for)."""
    if not future.done():
        future.set_exception(TimeoutError())


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
        if self.timeout is None:
            return await future
        # A timer that fails the reply's future, rather than ``asyncio.timeout``
        # (which cancels and uncancels the task): two replies a message wait.
        timer = self.replies.loop.call_later(self.timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

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


class Outcome(NamedTuple):
    """How one transaction ended. ``state`` is one of

    - ``sent``: the server accepted the content (``code``, ``reply``);
    - ``refused``: the server refused (``code``, ``reply``, and ``command``, the
      command it answered: MAIL FROM, RCPT TO, DATA or the final dot);
    - ``deferred``: neither, before any content went out (the connection broke
      before DATA, or a reply out of step with the command);
    - ``unknown``: the content went out and no clear answer came: the server
      may have the message;
    - ``failed``: not tried, the addresses or the size cannot go to this server;
    - ``held``: ``ready`` said no, and the content was held back;
    - ``stopped``: ``ready`` raised SendError, and the content was held back.

    ``keep``: the connection is fit for another transaction.
    """

    state: str
    reply: str
    keep: bool
    code: int | None = None
    command: str | None = None

    @property
    def answered(self) -> str:
        """The server's reply and the command it answered, as every sender reports a
        refusal: ``5.1.1 No such user (reply to RCPT TO)``."""
        return f"{self.reply[:500]} (reply to {self.command})"


class Ahead:
    """The next message of a connection, whose envelope goes out with the content
    of the message before it (``ahead`` of ``transact``), and is then sent by
    ``transact(..., ahead=...)``."""

    __slots__ = ("commands", "data", "ready", "recipient", "replies", "sender")

    def __init__(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        ready: Callable[[], Awaitable[bool]] | None,
        commands: list[bytes],
    ):
        self.sender, self.recipient, self.data, self.ready = sender, recipient, data, ready
        self.commands = commands
        self.replies: list[asyncio.Future[Reply]] | None = None  # once it went out

    @property
    def sent(self) -> bool:
        """Whether the envelope went out (with the content before it)."""
        return self.replies is not None

    def forget(self) -> None:
        """The envelope will not be followed (its connection is gone): its replies
        end quietly."""
        for future in self.replies or ():
            _quietly(future)


def ahead_of(
    conn: Connection,
    sender: str,
    recipient: str,
    data: bytes,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> Ahead | None:
    """The next message, to go out ahead on ``conn``; None if it cannot (no
    PIPELINING, or its addresses or size need the outcome of a transaction of
    its own)."""
    if not conn.pipelining:
        return None
    commands = _envelope(conn, sender, recipient, data)
    if isinstance(commands, Outcome):
        return None
    return Ahead(sender, recipient, data, ready, commands)


async def transact(
    conn: Connection,
    sender: str,
    recipient: str,
    data: bytes,
    *,
    ready: Callable[[], Awaitable[bool]] | None = None,
    then: Callable[[], Ahead | None] | None = None,
    ahead: Ahead | None = None,
) -> Outcome:
    """One message (``data`` in wire form) from ``sender`` to ``recipient`` on ``conn``.

    ``ready`` is called as the envelope goes out, and its answer awaited before
    the content follows (the sender's durable mark): False holds the content
    back. The message counts as sent only on a 2xx to the final dot.

    ``then`` is called just before the content goes: the next message it gives
    (``ahead_of``) has its envelope written with this content. ``ahead``: this
    message is such a next one, whose envelope went out already (its own
    ``ready`` is called now; ``sender``, ``recipient``, ``data`` and ``ready``
    given here are not used).
    """
    if ahead is not None and ahead.replies is not None:
        commands, sent = ahead.commands, ahead.replies
        go = ahead.ready() if ahead.ready is not None else None
    else:
        commands = _envelope(conn, sender, recipient, data)
        if isinstance(commands, Outcome):
            return commands
        # Asked for now, so that the caller's mark overlaps the round trips of the
        # envelope; the content still waits for it. (The DATA command itself may go
        # first: without the content and its final dot the server has no message.)
        go = ready() if ready is not None else None
        sent = None
    try:
        if sent is not None:
            replies = [await conn.reply(f) for f in sent]
        else:
            replies = await _send_envelope(conn, commands)
    except (TimeoutError, ConnectionLost) as e:
        _quietly(go)
        conn.abort()
        return Outcome("deferred", f"connection lost before DATA: {_lost(conn, e)}", False)
    refused = await _envelope_refused(conn, replies)
    if refused is not None:
        _quietly(go)
        return refused
    # The server waits for the content. Stopping now means closing the
    # connection without the final dot, which abandons the message.
    if go is not None:
        try:
            allowed = await go
        except SendError as e:
            conn.abort()
            return Outcome("stopped", str(e), False)
        if not allowed:
            conn.abort()
            return Outcome("held", "held back before the content went out", False)
    following = then() if then is not None else None
    return await _send_content(conn, data, following)


def _envelope(conn: Connection, sender: str, recipient: str, data: bytes) -> list[bytes] | Outcome:
    """MAIL FROM, RCPT TO and DATA for this server, or the ``failed`` outcome of a
    message it cannot take (an address or a size), before anything is sent."""
    if not conn.smtputf8 and not (recipient.isascii() and sender.isascii()):
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
            return Outcome("failed", reply, True)
    utf8 = not (recipient.isascii() and sender.isascii())
    if conn.max_size is not None and len(data) > conn.max_size:
        # RFC 1870: refused before anything is uploaded, for this message only.
        reply = (
            f"the message is {len(data):,} bytes, over the server's limit of "
            f"{conn.max_size:,} bytes (SIZE); make it smaller (images, attachments)"
        )
        return Outcome("failed", reply, True)
    try:
        mail = b"MAIL FROM:" + path(sender, utf8)
        rcpt = b"RCPT TO:" + path(recipient, utf8) + b"\r\n"
    except ValueError as e:
        return Outcome("failed", str(e), True)
    if conn.size is not None:
        mail += b" SIZE=%d" % len(data)
    return [mail + (b" SMTPUTF8\r\n" if utf8 else b"\r\n"), rcpt, b"DATA\r\n"]


async def _send_envelope(conn: Connection, commands: list[bytes]) -> list[Reply]:
    """The replies to the envelope's commands: all in one write with PIPELINING,
    else one at a time, stopping at the first refusal (RFC 5321)."""
    if conn.pipelining:
        futures = conn.send(b"".join(commands), len(commands))
        return [await conn.reply(f) for f in futures]
    replies: list[Reply] = []
    for step, command in enumerate(commands):
        replies.append(await conn.reply(conn.send(command)[0]))
        if replies[-1].code not in _ENVELOPE_OK[step]:
            break
    return replies


async def _envelope_refused(conn: Connection, replies: list[Reply]) -> Outcome | None:
    """The outcome of the first envelope reply that does not let the message go on;
    None when the server waits for the content."""
    for step, reply in enumerate(replies):
        if reply.code in _ENVELOPE_OK[step]:
            continue
        if not 400 <= reply.code < 600:
            # Neither acceptance nor refusal: the server is out of step with
            # us. Nothing of the message went out; drop the connection.
            conn.abort()
            text = f"unexpected reply to {_COMMANDS[step]}: {reply.code} {reply.message}"
            return Outcome("deferred", text[:500], False)
        if replies[-1].code == 354:  # DATA accepted after a refusal: abandon it
            conn.abort()
        keep = reply.code != 421 and conn.is_connected and await _rset(conn)
        return Outcome("refused", reply.message, keep, reply.code, _COMMANDS[step])
    return None


async def _send_content(conn: Connection, data: bytes, following: Ahead | None) -> Outcome:
    """Send the content with its final dot (and the ``following`` message's
    envelope); the message is sent only on a 2xx."""
    if following is None:
        (done,) = conn.send(data)
    else:
        done, *following.replies = conn.send(
            data + b"".join(following.commands), 1 + len(following.commands)
        )
    try:
        end = await conn.reply(done)
    except (TimeoutError, ConnectionLost) as e:
        conn.abort()
        return Outcome("unknown", f"no reply to the final dot: {_lost(conn, e)}"[:500], False)
    if 200 <= end.code < 300:
        return Outcome("sent", end.message, True, end.code)
    if 400 <= end.code < 600:
        # The server answered: a definite refusal of the message.
        keep = end.code != 421 and conn.is_connected
        return Outcome("refused", end.message, keep, end.code, "the final dot")
    # Neither accepted nor refused: the server may have the message.
    conn.abort()
    text = f"unexpected reply to the final dot: {end.code} {end.message}"
    return Outcome("unknown", text[:500], False)


def _quietly(future) -> None:
    """Let an answer we no longer wait for finish quietly."""
    if isinstance(future, asyncio.Future):
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _lost(conn: Connection, e: BaseException) -> str:
    """Why a reply did not come: TimeoutError has no text of its own."""
    if isinstance(e, TimeoutError):
        return f"timed out after {conn.timeout:g} s"
    return str(e) or type(e).__name__


async def _rset(conn: Connection) -> bool:
    """Reset the transaction after a refusal; False if the connection is no good."""
    try:
        reply = await conn.command(b"RSET")
    except (TimeoutError, ConnectionLost):
        conn.abort()
        return False
    return reply.code == 250 and conn.is_connected
