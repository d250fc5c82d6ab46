"""Domain names in the one IDNA encoding listkit uses: UTS 46 to A-labels.

The rule: every internationalised domain (of a setting, an imported address,
a recipient, a Message-ID, an EHLO name) becomes ASCII here and nowhere
else. UTS 46 maps as browsers and mail software do (case, full-width dots)
and keeps ß as itself (``straße.de`` -> ``xn--strae-oqa.de``); Python's own
``idna`` codec is IDNA 2003, which turns it into ``strasse.de``, another
domain with another owner.
"""

from __future__ import annotations

import idna


def ascii_host(domain: str) -> str | None:
    """``domain`` in A-labels; an ASCII domain as it is; None if it is not a valid IDN."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None
