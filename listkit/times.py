"""Times from outside (exports, webhooks, options) read one way: ISO 8601 in UTC.

The rule: every importer and webhook reads a producer's time through
``parse_time``, so a time one of them accepts is accepted by all, and stored
the same way (``2026-11-22T11:21:16+00:00``). A time without a zone is UTC.
Read: ISO 8601 with or without ``T``, fractions and an offset (``Z``,
``+01``, ``-0400``, also after a space as Shopify writes it), a trailing
`` UTC`` (Beehiiv, Gumroad), Unix seconds (Stripe, Lemon Squeezy), and
``MM/DD/YYYY[ HH:MM[:SS]]`` and ``14 Mar 2024 09:12:31`` as US shops export.
Durations (a campaign's ``max_late``, a setting's quiet period) are read by
``parse_duration`` alone: ``6h``, ``30m``, ``2d``, ``1h30m``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from listkit.errors import InputError, quoted

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration anything takes: past it, a value is a typo, not a plan.
LONGEST = timedelta(days=366)

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


def parse_duration(value: str, where: str, most: timedelta = LONGEST) -> timedelta:
    """'6h', '30m', '2d', '1h30m' -> timedelta, at most ``most``; an InputError
    starting with ``where`` otherwise."""
    text = value.strip().lower()
    pos, total = 0, 0.0
    for m in DURATION.finditer(text):
        if text[pos : m.start()].strip():
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise InputError(f"{where} {value!r} is not a duration such as '6h', '30m' or '2d'")
    if not total <= most.total_seconds():  # also catches inf from a very long number
        raise InputError(f"{where} {value!r} is too long: at most {format_duration(most)}")
    return timedelta(seconds=total)


def format_duration(delta: timedelta | None) -> str:
    """timedelta -> '2d3h', '6h', '45m', '30s' (the form campaign files and settings use)."""
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
