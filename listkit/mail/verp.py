"""The VERP envelope: a bounce names the delivery it comes back for.

With ``LISTKIT_BOUNCE_ADDRESS=bounces@example.com`` each message goes out with
MAIL FROM ``bounces+<token>@example.com``; any bounce or delivery report
returns to that address, and the token in it names exactly one delivery. The
rule: a token is read back only when it has the exact shape of one
(``tracking.is_token``), whatever case a relay gave the address.
"""

from __future__ import annotations

import re

from listkit.domains import ascii_host
from listkit.errors import ConfigError
from listkit.mail.tracking import is_token

# No control character either: SMTP refuses it in MAIL FROM, and every message would fail.
_ADDRESS = re.compile(r"([^@\s+<>\x00-\x1f\x7f]+)@([^@\s<>\x00-\x1f\x7f]+\.[^@\s<>\x00-\x1f\x7f]+)")
_VERP = re.compile(r"[^@\s<>+]+\+([A-Za-z2-7]{16})@[^@\s<>]+")


def bounce_address(value: str | None) -> str | None:
    """The checked ``LISTKIT_BOUNCE_ADDRESS`` (domain in lower-case A-labels), or None if unset."""
    if not value or not value.strip():
        return None
    m = _ADDRESS.fullmatch(value.strip())
    host = ascii_host(m.group(2)) if m is not None else None
    if m is None or not m.group(1).isascii() or host is None:
        raise ConfigError(
            f"LISTKIT_BOUNCE_ADDRESS must be a plain address without '+', such as "
            f"bounces@example.com, not {value.strip()!r}"
        )
    return f"{m.group(1)}@{host.lower()}"


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
