"""Lists: named groups of subscribers (``lists`` table) and their counts."""

from __future__ import annotations

import re

from sqlite_utils import Database

from listkit.db import immediate, now
from listkit.errors import HeaderInjection, InputError, ListkitError, NotFound
from listkit.mail.mime import check_header

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# A member a campaign can mail (membership alias ``m``): active, and the address not
# suppressed (whatever its status says, a suppressed address is never mailed again).
# The suppressed set is built once, not looked up per member.
MAILABLE_MEMBER = """m.status = 'active' AND m.subscriber_id NOT IN
    (SELECT ms.id FROM suppressions mx JOIN subscribers ms ON ms.key = mx.key)"""


def check_slug(slug: str, what: str = "list") -> str:
    if not SLUG.fullmatch(slug):
        raise InputError(
            f"{what} name {slug!r} is not valid: use lower-case letters, digits, - and _ "
            "(at most 64, starting with a letter or digit)"
        )
    return slug


def get_list(db: Database, slug: str) -> dict:
    """The list row for ``slug``; raises NotFound naming the slug."""
    row = db.execute("SELECT id, slug, title, created FROM lists WHERE slug = ?", [slug]).fetchone()
    if row is None:
        raise NotFound(f"no list named {slug!r}: see `listkit lists ls`")
    return dict(zip(("id", "slug", "title", "created"), row, strict=True))


def create_list(db: Database, slug: str, title: str | None = None) -> dict:
    check_slug(slug)
    try:
        # The title goes in every message's List-Id header: refuse now what the
        # sender would refuse for each member of the list.
        check_header(title or "", "list title", slug)
    except HeaderInjection:
        raise InputError(
            f"list title {title!r} contains a control character: refused, the list was not created"
        ) from None
    if db.execute("SELECT 1 FROM lists WHERE slug = ?", [slug]).fetchone():
        raise ListkitError(f"list {slug!r} already exists")
    db.execute(
        "INSERT INTO lists (slug, title, created) VALUES (?, ?, ?)", [slug, title or None, now()]
    )
    return get_list(db, slug)


def member_counts(db: Database) -> dict[int, dict[str, int]]:
    """Per list id, its members per status, where ``active`` counts only those a
    campaign can mail and ``suppressed`` the active members whose address is
    suppressed. Cost: one pass over the (list_id, status) index, and one over the
    suppressions (read first: far fewer than the members)."""
    counts: dict[int, dict[str, int]] = {}
    for lid, status, n in db.execute(
        "SELECT list_id, status, COUNT(*) FROM memberships GROUP BY list_id, status"
    ):
        counts.setdefault(lid, {})[status] = n
    for lid, n in db.execute(
        """SELECT m.list_id, COUNT(*) FROM suppressions x CROSS JOIN subscribers s
           CROSS JOIN memberships m
           WHERE s.key = x.key AND m.subscriber_id = s.id AND m.status = 'active'
           GROUP BY m.list_id"""
    ):
        counts[lid]["suppressed"] = n
        counts[lid]["active"] -= n
    return counts


def list_lists(db: Database) -> list[dict]:
    """Every list with its member counts: active (mailable), suppressed (an active
    membership of a suppressed address), unsubscribed, bounced (and complained)."""
    counts = member_counts(db)
    keys = ("active", "suppressed", "unsubscribed", "bounced", "complained")
    return [
        {"slug": slug, "title": title, "created": created}
        | {k: counts.get(lid, {}).get(k, 0) for k in keys}
        for lid, slug, title, created in db.execute(
            "SELECT id, slug, title, created FROM lists ORDER BY slug"
        )
    ]


def remove_list(db: Database, slug: str) -> int:
    """Delete a list and its memberships (subscribers stay); returns members removed.

    A list that campaigns have delivered through cannot be removed: its
    deliveries and sales attribution point at it.
    """
    lst = get_list(db, slug)
    used = db.execute("SELECT COUNT(*) FROM deliveries WHERE list_id = ?", [lst["id"]]).fetchone()
    if used[0]:
        raise ListkitError(
            f"list {slug!r} has {used[0]} deliveries from campaigns: it is kept for reports"
        )
    with immediate(db):
        members = db.execute(
            "SELECT COUNT(*) FROM memberships WHERE list_id = ?", [lst["id"]]
        ).fetchone()[0]
        db.execute("DELETE FROM memberships WHERE list_id = ?", [lst["id"]])
        db.execute("DELETE FROM lists WHERE id = ?", [lst["id"]])
    return members
