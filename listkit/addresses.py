"""Email addresses: validation and the one rule for the key that identifies a subscriber.

``email_key`` is the identity of an address everywhere in listkit (subscribers,
suppressions, sales): the trimmed address with its local part case-folded
(Unicode NFC) and its domain in its ASCII (IDNA) form, lower case, so that
``anna@bücher.example`` and ``anna@xn--bcher-kva.example`` are one subscriber.
For a plain ASCII address that is simply the address case-folded; the rule
is here and nowhere else. ``normalize_address``
decides validity exactly as email-validator does (no DNS); a strict regular
expression answers first for the common plain ASCII form, so that importing a
million rows does not cost a million full parses, and email-validator (whose
import compiles its grammar: a tenth of a second) is loaded only for an address
that needs it.
"""

from __future__ import annotations

import re
import unicodedata

from listkit.domains import ascii_host
from listkit.errors import InputError

# A subset of what email-validator accepts: dot-atom local part, LDH domain
# labels, alphabetic top-level domain. Anything else takes the full path.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_FAST = re.compile(
    rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}))"
)
# email-validator refuses these special-use domains (RFC 6761 and friends).
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def email_key(address: str) -> str:
    """The key of an address: ``' Ann@Example.COM '`` -> ``'ann@example.com'``,
    ``'Anna@Bücher.example'`` -> ``'anna@xn--bcher-kva.example'``.

    Never raises: text that is not an address (a buyer field in a sales
    export, say) gets its case-folded NFC form.
    """
    text = address.strip()
    if text.isascii():
        return text.casefold()
    local, at, domain = text.rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", text.casefold())
    local = unicodedata.normalize("NFC", local.casefold())
    if not domain.isascii():
        domain = ascii_host(domain) or unicodedata.normalize("NFC", domain)
    return f"{local}@{domain.casefold()}"


def normalize_address(raw: str) -> str:
    """The address trimmed and with its domain normalised; InputError says why not valid."""
    address = raw.strip()
    m = _FAST.fullmatch(address)
    if m is not None:
        local, domain, tld = m.groups()
        if len(local) <= 64 and len(address) <= 254 and tld.lower() not in _SPECIAL_TLDS:
            return f"{local}@{domain.lower()}"
    if not address:
        raise InputError("no address")
    from email_validator import EmailNotValidError, validate_email  # lazy: see the docstring

    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise InputError(str(e)) from None


def ascii_domain(address: str) -> str | None:
    """``address`` with its domain in IDNA A-labels (``anna@xn--bcher-kva.example``).

    The form for a server without SMTPUTF8 and for a header that must stay
    ASCII. None when that cannot be: the local part is not ASCII (only
    SMTPUTF8 can carry it) or the domain is not a valid IDN.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    host = ascii_host(domain)
    return None if host is None else f"{local}@{host}"
