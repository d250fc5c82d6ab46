"""The VERP envelope: a bounce names the delivery it comes back for.

With ``LISTKIT_BOUNCE_ADDRESS=bounces@example.com`` each message goes out with
MAIL FROM ``bounces+<token>@example.com``; any bounce or delivery report
returns to that address, and the token in it names exactly one delivery. The
rule: a token is read back only when it has the exact shape of one
(``tracking.is_token``), whatever case a relay gave the address.
"""

from __future__ import annotations

import re

from listkit.mail.tracking import is_token

_VERP = re.compile(r"[^@\s<>+]+\+([A-Za-z2-7]{16})@[^@\s<>]+")


def verp_address(bounce: str, token: str) -> str:
    """``bounces@example.com`` + token -> ``bounces+<token>@example.com``."""
    local, _, domain = bounce.rpartition("@")
    return f"{local}+{token}@{domain}"


def envelope_sender(bounce: str | None, sender: str, token: str) -> str:
    """A message's MAIL FROM: the VERP bounce address naming ``token`` when
    LISTKIT_BOUNCE_ADDRESS is set, else the sender's own address."""
    return verp_address(bounce, token) if bounce else sender


def token_from_address(address: str | None) -> str | None:
    """The delivery token a VERP address carries, or None."""
    if not address:
        return None
    m = _VERP.search(address)
    if m is None:
        return None
    token = m.group(1).lower()
    return token if is_token(token) else None
