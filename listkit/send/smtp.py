"""SMTP: opening a connection, and the one transaction every message goes through.

aiosmtplib opens the connection (TCP or implicit TLS, EHLO, STARTTLS, AUTH:
``connect``); ``Connection`` then takes over its transport for the
transactions, and ``transact`` is the transaction itself: campaigns, `send
--test-to` and signup confirmations (``single.send_one``) all go through it,
with the same checks (SMTPUTF8, SIZE, safe paths) and the same outcomes.

aiosmtplib waits for each reply before the next command, so a message costs
four round trips (MAIL, RCPT, DATA, the content). With PIPELINING (RFC 2920),
advertised by the server, MAIL, RCPT and DATA go out in one write and the
content after the 354: two round trips, and half the system calls and
wake-ups. Without PIPELINING each command waits for its
reply, as RFC 5321 requires.

The content is sent in wire form, prepared where the message is rendered
(``wire_form``): CRLF line ends, leading dots doubled, the final dot added.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import aiosmtplib

from listkit.addresses import ascii_domain
from listkit.config import SMTPSettings
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


async def transact(
    conn: Connection,
    sender: str,
    recipient: str,
    data: bytes,
    *,
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> Outcome:
    """One message (``data`` in wire form) from ``sender`` to ``recipient`` on ``conn``.

    ``ready`` is called as the envelope goes out, and its answer awaited before
    the content follows (the sender's durable mark): False holds the content
    back. The message counts as sent only on a 2xx to the final dot.
    """
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
    commands = (mail + (b" SMTPUTF8\r\n" if utf8 else b"\r\n"), rcpt, b"DATA\r\n")
    # Asked for now, so that the caller's mark overlaps the round trips of the
    # envelope; the content still waits for it. (The DATA command itself may go
    # first: without the content and its final dot the server has no message.)
    go = ready() if ready is not None else None
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
        _quietly(go)
        conn.abort()
        return Outcome("deferred", f"connection lost before DATA: {_lost(conn, e)}", False)
    for step, reply in enumerate(replies):
        if reply.code in _ENVELOPE_OK[step]:
            continue
        _quietly(go)
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
    try:
        end = await conn.reply(conn.send(data)[0])
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
