"""A local capture SMTP server (aiosmtpd): try a campaign without mailing anyone.

Every message is accepted, described in one line (sender, recipients,
subject, Message-ID) and, with a maildir, stored there. Nothing is relayed.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller


class CaptureHandler:
    def __init__(self, maildir: Path | None = None, out: Callable[[str], None] = print):
        self.maildir = mailbox.Maildir(str(maildir), create=True) if maildir else None
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
            self.maildir.add(data)
        stamp = datetime.now().strftime("%H:%M:%S")
        self.out(
            f"{stamp} #{self.count} from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}: "
            f"{headers.get('Subject', '')!s} {message_id} ({len(data):,} bytes)"
        )
        return "250 2.0.0 OK: captured by listkit sink"


def start_sink(
    host: str = "127.0.0.1",
    port: int = 1025,
    *,
    maildir: Path | None = None,
    out: Callable[[str], None] = print,
) -> tuple[Controller, CaptureHandler]:
    """Start the sink in a background thread; stop it with ``controller.stop()``."""
    handler = CaptureHandler(maildir, out)
    controller = Controller(
        handler, hostname=host, port=port, decode_data=False, enable_SMTPUTF8=True
    )
    controller.start()
    return controller, handler
