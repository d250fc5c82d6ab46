"""A subscriber's name: the full name, and the first and last names templates greet by.

The rule: a name is one line (``text.one_line``). First and last names are
kept as an export gives them in columns of their own (Mailchimp's First Name
and Last Name, Beehiiv's, Kit's first_name); the full name is then the two
joined by a space. Where only a full name is known (Ghost's ``name``, a CSV's
name column, a name set by hand), the first name is its first word and the
last name the rest, as Ghost splits it for its own ``first_name``
personalisation (``member.name.split(' ')[0]``).
"""

from __future__ import annotations

from listkit.text import one_line

MAX_NAME = 256


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """(first word, the rest) of a full name; None for what is not there."""
    first, _, last = (name or "").strip().partition(" ")
    return first or None, last.strip() or None


def join_name(first: str | None, last: str | None) -> str | None:
    """The full name of a first and a last name, either of which may be missing."""
    return " ".join(part for part in (first, last) if part) or None


def name_parts(
    name: str | None, first: str | None, last: str | None
) -> tuple[str | None, str | None]:
    """(first, last) as templates see them: as stored when either is, else split from ``name``."""
    if first or last:
        return first or None, last or None
    return split_name(name)


def clean_name(value: str | None) -> str | None:
    """A name as stored: one line, trimmed; None when nothing is left."""
    return (one_line(value) or None) if value else None
