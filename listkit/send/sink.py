"""A local capture SMTP server (aiosmtpd): try a campaign without mailing anyone.

Every message is accepted, described in one line (sender, recipients,
subject, Message-ID) and, with a maildir, stored there with the envelope sender
in a ``Return-Path`` header on top, as a mailbox's delivery agent adds it (RFC
5321 4.4): what the bounce address (VERP) made of MAIL FROM can be read from the
message itself. Nothing is relayed.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller

from listkit.files import write_private


class CaptureHandler:
    def __init__(self, maildir: Path | None = None, out: Callable[[str], None] = print):
        self.maildir = maildir
        if maildir is not None:
            maildir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in ("tmp", "new", "cur"):
                (maildir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.out = out
        self.count = 0
        self.message_ids: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        headers = BytesHeaderParser(policy=default).parsebytes(data)
        message_id = str(headers.get("Message-ID", "")).strip()
        self.count += 1
        self.message_ids.append(message_id)
        if self.maildir is not None:
            self._store(return_path(envelope.mail_from, data) + data)
        stamp = datetime.now().strftime("%H:%M:%S")
        self.out(
            f"{stamp} #{self.count} from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}: "
            f"{headers.get('Subject', '')!s} {message_id} ({len(data):,} bytes)"
        )
        return "250 2.0.0 OK: captured by listkit sink"

    def _store(self, data: bytes) -> None:
        """Deliver into the maildir as Maildir readers expect (tmp/, then renamed
        into new/), the file private: a captured message holds personal data."""
        assert self.maildir is not None
        name = f"{time.time():.6f}.P{os.getpid()}R{secrets.token_hex(6)}.{socket.gethostname()}"
        tmp = self.maildir / "tmp" / name
        write_private(tmp, data)
        os.rename(tmp, self.maildir / "new" / name)


def return_path(mail_from: str | None, data: bytes) -> bytes:
    """The ``Return-Path`` line a delivery agent puts on top of a message: the
    envelope sender (``<>`` for a bounce's null sender), with the message's own line
    ending. The DKIM signature does not cover it."""
    newline = b"\r\n" if data.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    address = (mail_from or "").strip().strip("<>")
    return b"Return-Path: <" + address.encode("utf-8") + b">" + newline


class BoundController(Controller):
    """aiosmtpd's Controller serving a socket bound before its thread starts.

    aiosmtpd binds inside its server thread and, when that fails, waits its
    whole ``ready_timeout`` (5 s) before it reports the error. Bound here, in
    the caller's thread, a port in use is an ``OSError`` at once; port 0
    takes a free port, which ``port`` then names.
    """

    def __init__(self, handler, host: str, port: int, **kwargs):
        # proto IPPROTO_TCP, as asyncio's own listeners have: asyncio turns Nagle off
        # (TCP_NODELAY) only on connections of such a socket; with Nagle on, every
        # pipelined SMTP reply waits for a delayed ACK (about 40 ms a message).
        family, type_, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.sock = socket.socket(family, type_, proto)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(address)
            self.sock.listen()
            super().__init__(handler, hostname=host, port=self.sock.getsockname()[1], **kwargs)
        except BaseException:
            self.sock.close()
            raise

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)

    def start(self) -> None:
        try:
            super().start()
        except BaseException:
            self.sock.close()
            raise


def start_sink(
    host: str = "127.0.0.1",
    port: int = 1025,
    *,
    maildir: Path | None = None,
    out: Callable[[str], None] = print,
) -> tuple[Controller, CaptureHandler]:
    """Start the sink in a background thread; stop it with ``controller.stop()``."""
    handler = CaptureHandler(maildir, out)
    controller = BoundController(handler, host, port, decode_data=False, enable_SMTPUTF8=True)
    controller.start()
    return controller, handler
