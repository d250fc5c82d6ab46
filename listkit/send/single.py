"""One message, sent now: `listkit send --test-to` and the service's signup confirmations.

The rule: a single message goes through the same SMTP transaction as a
campaign's (``smtp.transact``: pipelined, SIZE, SMTPUTF8, safe paths), over a
connection of its own; it is sent only on the server's 2xx to the final dot,
and anything else is a ``SendError`` that says what the server said. What
was sent is recorded by the caller, never here.
"""

from __future__ import annotations

import aiosmtplib

from listkit.config import SMTPSettings
from listkit.errors import SendError
from listkit.send.smtp import Connection, ConnectionLost, connect, transact, wire_form


async def send_one(smtp: SMTPSettings, sender: str, to: str, message: bytes) -> str:
    """Send ``message`` with the envelope ``sender`` -> ``to``; the server's reply to
    the final dot (``"250 ..."``). ``sender`` is the envelope's (the VERP bounce
    address when there is one). Failures are a ``SendError`` naming
    ``LISTKIT_SMTP_URL`` (password masked) or quoting the server's refusal.
    """
    where = f"LISTKIT_SMTP_URL ({smtp.masked()})"
    try:
        conn = Connection(await connect(smtp), smtp.timeout)
    except (aiosmtplib.SMTPException, OSError, ConnectionLost) as e:  # SendError passes
        raise SendError(f"{where}: cannot connect: {e or type(e).__name__}") from None
    try:
        out = await transact(conn, sender, to, wire_form(message))
    finally:
        await conn.quit()
    if out.state == "sent":
        return f"{out.code} {out.reply}"
    if out.state == "refused":
        raise SendError(
            f"the server refused the message: {out.code} {out.reply} (reply to {out.command})"
        )
    if out.state == "unknown":
        raise SendError(f"{where}: {out.reply}; the server may have the message")
    raise SendError(f"the message was not sent: {out.reply}")
