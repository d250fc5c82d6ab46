"""Email addresses: validation and the one rule for the key that identifies a subscriber.

``email_key`` is the identity of an address everywhere in listkit (subscribers,
suppressions, sales): the trimmed address with its local part case-folded
(Unicode NFC) and its domain in its ASCII (IDNA) form, lower case, so that
``anna@bücher.example`` and ``anna@xn--bcher-kva.example`` are one subscriber.
For a plain ASCII address that is simply the address case-folded; the rule
is here and nowhere else. ``normalize_address``
decides validity exactly as email-validator does (no DNS); strict regular
expressions answer first for the common plain ASCII form, so that importing a
million rows does not cost a million full parses, and the verdict on each
domain is remembered (a list has few domains and many addresses), so that a
row costs one match of its local part; email-validator (whose import compiles
its grammar: a tenth of a second) is loaded only for an address that needs it.
``address_and_key`` gives an address and its key at once, as an import needs
them for every row.
"""

from __future__ import annotations

import re
import unicodedata

from listkit.domains import ascii_host
from listkit.errors import InputError

# A subset of what email-validator accepts: dot-atom local part, LDH domain
# labels, alphabetic top-level domain. Anything else takes the full path.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_FAST_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_FAST_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63})")
# email-validator refuses these special-use domains (RFC 6761 and friends).
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})
# The fast path's verdict on each domain as written: its lower-case form, or
# "" for one the full path must judge. Only domains of addresses short enough
# to be valid, and cleared when full: memory stays flat (about 1 MB at most)
# whatever a file holds.
_fast_domains: dict[str, str] = {}
_FAST_DOMAINS_MAX = 4096


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


def _fast_domain(domain: str) -> str:
    """``domain`` in lower case when the fast path may take it, else ""."""
    m = _FAST_DOMAIN.fullmatch(domain)
    plain = m is not None and m[1].lower() not in _SPECIAL_TLDS
    if len(_fast_domains) >= _FAST_DOMAINS_MAX:
        _fast_domains.clear()
    _fast_domains[domain] = verdict = domain.lower() if plain else ""
    return verdict


def _fast(address: str) -> str | None:
    """A plain ASCII address (trimmed) normalised, or None when the full path must judge."""
    if len(address) > 254:
        return None  # and no overlong domain is remembered
    local, _, domain = address.rpartition("@")
    host = _fast_domains.get(domain)
    if host is None:
        host = _fast_domain(domain)
    if host and len(local) <= 64 and _FAST_LOCAL.fullmatch(local):
        return address if host == domain else f"{local}@{host}"
    return None


def address_and_key(raw: str) -> tuple[str, str]:
    """``normalize_address(raw)`` and its ``email_key``, at once; InputError as there."""
    address = _fast(raw.strip())
    if address is not None:
        return address, address.lower()  # ASCII: lower case is the case fold
    address = normalize_address(raw)
    return address, email_key(address)


def normalize_address(raw: str) -> str:
    """The address trimmed and with its domain normalised; InputError says why not valid."""
    address = raw.strip()
    fast = _fast(address)
    if fast is not None:
        return fast
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
