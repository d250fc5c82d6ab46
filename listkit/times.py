"""Times from outside (exports, webhooks, options) read one way: ISO 8601 in UTC.

The rule: every importer and webhook reads a producer's time through
``parse_time``, so a time one of them accepts is accepted by all, and stored
the same way (``2026-11-22T11:21:16+00:00``). A time without a zone is UTC.
Read: ISO 8601 with or without ``T``, fractions and an offset (``Z``,
``+01``, ``-0400``, also after a space as Shopify writes it), a trailing
`` UTC`` (Beehiiv, Gumroad), Unix seconds (Stripe, Lemon Squeezy), and
``MM/DD/YYYY[ HH:MM[:SS]]`` and ``14 Mar 2024 09:12:31`` as US shops export.
"""

from __future__ import annotations

from datetime import UTC, datetime

from listkit.errors import InputError, quoted

_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d %b %Y %H:%M:%S")


def parse_time(value: object, field_name: str) -> str:
    """``value`` as ISO 8601 UTC; InputError naming ``field_name`` (and quoting the
    value only as ``quoted`` does: never an address) when it is no time."""
    # YYYY-MM-DD HH:MM:SS without a zone, the usual case of an export (read for every
    # row of a large import): the text is the answer.
    if value.__class__ is str and len(value) == 19 and value[10] == " " and value[16] == ":":
        try:
            naive = datetime.fromisoformat(value).tzinfo is None
        except ValueError:
            naive = False
        if naive:
            return f"{value[:10]}T{value[11:]}+00:00"
    if isinstance(value, bool) or not isinstance(value, str | int | None):
        raise InputError(f"{field_name} {quoted(value)} is not a date and time")
    text = str(value if value is not None else "").strip()
    if not text:
        raise InputError(f"{field_name} is empty")
    dt = _parsed(text)
    if dt is None:
        raise InputError(f"{field_name} {quoted(text)} is not a date and time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC).isoformat()
    except OverflowError:
        raise InputError(f"{field_name} {quoted(text)} is not a date and time") from None


def _parsed(text: str) -> datetime | None:
    if text.isascii() and text.isdigit():
        if len(text) > 11:  # past the year 5000: not a Unix time
            return None
        return datetime.fromtimestamp(int(text), UTC)
    if len(text) > 64:
        return None
    candidate = text.replace("Z", "+00:00").replace(" UTC", "+00:00")
    for attempt in (candidate, candidate.replace(" +", "+").replace(" -", "-")):
        try:
            return datetime.fromisoformat(attempt)
        except ValueError:
            continue
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None
