"""The Message-ID of a delivery: built when the message is made, read back from what returns.

A delivery's Message-ID is ``<token.lk@domain>``: the token names the
delivery, the domain is the sender's in A-labels (a Message-ID is ASCII). The
rule: a Message-ID is read back as a delivery's only when it has exactly that
shape, whatever case a relay gave it; anything else names no delivery.
"""

from __future__ import annotations

import re

from listkit.domains import ascii_host

_OURS = re.compile(r"<?([a-z2-7]{16})\.lk@[^>\s]+>?", re.IGNORECASE)
_HEADER = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


def message_id(token: str, domain: str) -> str:
    """The Message-ID of a delivery, on the sender's domain (in A-labels)."""
    return f"<{token}.lk@{ascii_host(domain) or domain}>"


def token_of(message_id: str | None) -> str | None:
    """The delivery token a listkit Message-ID carries, or None."""
    m = _OURS.fullmatch((message_id or "").strip())
    return m.group(1).lower() if m else None


def returned_message_id(text: str) -> tuple[str | None, str | None]:
    """(the Message-ID, the token it carries) of the first Message-ID header in ``text``
    (the headers of a returned message, or a whole raw message)."""
    m = _HEADER.search(text)
    mid = m.group(1) if m else None
    return mid, token_of(mid)
