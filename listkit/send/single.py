"""One message, sent now: `listkit send --test-to` and the service's signup confirmations.

The rule: a single message goes through the same SMTP transaction as a
campaign's (``smtp.transact``: pipelined, SIZE, SMTPUTF8, safe paths), over a
connection of its own; it is sent only on the server's 2xx to the final dot,
and anything else is a ``SendError`` that says what the server said. What
was sent is recorded by the caller, never here. The message comes signed
(DKIM, when configured) from its composer, and the envelope sender is the
VERP bounce address, as a campaign's (``verp.envelope_sender``).
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from listkit.addresses import normalize_address
from listkit.config import SMTPSettings
from listkit.errors import SendError
from listkit.mail.compose import SAMPLE_SUBSCRIBER, Composed
from listkit.mail.tracking import new_token
from listkit.mail.verp import envelope_sender
from listkit.send.campaigns import iter_audience
from listkit.send.connect import open_connection
from listkit.send.prepare import prepare
from listkit.send.smtp import ConnectionLost, transact, wire_form
from listkit.workspace import Workspace


async def send_one(smtp: SMTPSettings, sender: str, to: str, message: bytes) -> str:
    """Send ``message`` with the envelope ``sender`` -> ``to``; the server's reply to
    the final dot (``"250 ..."``). ``sender`` is the envelope's (the VERP bounce
    address when there is one). Failures are a ``SendError`` naming
    ``LISTKIT_SMTP_URL`` (password masked) or quoting the server's refusal.
    """
    where = f"LISTKIT_SMTP_URL ({smtp.masked()})"
    try:
        conn = await open_connection(smtp)
    except (aiosmtplib.SMTPException, OSError, ConnectionLost) as e:  # SendError passes
        raise SendError(f"{where}: cannot connect: {e or type(e).__name__}") from None
    try:
        out = await transact(conn, sender, to, wire_form(message))
    finally:
        await conn.quit()
    if out.state == "sent":
        return f"{out.code} {out.reply}"
    if out.state == "refused":
        raise SendError(f"the server refused the message: {out.code} {out.answered}")
    if out.state == "unknown":
        raise SendError(f"{where}: {out.reply}; the server may have the message")
    raise SendError(f"the message was not sent: {out.reply}")


def send_test(ws: Workspace, slug: str, to: str) -> tuple[Composed, str]:
    """Send one message, rendered for a sample of the audience, to ``to``; record nothing."""
    address = normalize_address(to)
    p = prepare(ws, slug, recorded=False)
    sample = next(iter_audience(ws.db, p.campaign), None)
    subscriber, list_slug, title = sample or (dict(SAMPLE_SUBSCRIBER), p.campaign.lists[0], None)
    token = new_token()
    composed = p.composer.compose(
        subscriber={**subscriber, "email": address},
        list_slug=list_slug,
        list_title=title,
        token=token,
    )
    envelope = envelope_sender(p.bounce_address, p.sender_address, token)
    reply = asyncio.run(send_one(p.smtp, envelope, address, composed.data))
    return composed, reply
