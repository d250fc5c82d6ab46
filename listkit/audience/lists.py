"""Lists: named groups of subscribers (``lists`` table) and their counts."""

from __future__ import annotations

import re

from sqlite_utils import Database

from listkit.db import immediate, now
from listkit.errors import HeaderInjection, InputError, ListkitError, NotFound
from listkit.mail.mime import check_header

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# A membership (alias ``m``) whose address is suppressed: whatever its status says, it
# is never mailed again. Its list counts it as suppressed, not active.
SUPPRESSED_MEMBER = """EXISTS (SELECT 1 FROM subscribers ms JOIN suppressions mx ON mx.key = ms.key
                              WHERE ms.id = m.subscriber_id)"""
# A member a campaign can mail: active and not suppressed (`lists ls` and the reports).
MAILABLE_MEMBER = f"m.status = 'active' AND NOT {SUPPRESSED_MEMBER}"


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


def list_lists(db: Database) -> list[dict]:
    """Every list with its member counts: active (mailable), suppressed (an active
    membership of a suppressed address), unsubscribed, bounced (and complained)."""
    cursor = db.execute(
        f"""SELECT l.slug, l.title, l.created,
                  COUNT(m.subscriber_id) FILTER (WHERE {MAILABLE_MEMBER}),
                  COUNT(m.subscriber_id) FILTER (WHERE m.status = 'active'
                                                 AND {SUPPRESSED_MEMBER}),
                  COUNT(m.subscriber_id) FILTER (WHERE m.status = 'unsubscribed'),
                  COUNT(m.subscriber_id) FILTER (WHERE m.status = 'bounced'),
                  COUNT(m.subscriber_id) FILTER (WHERE m.status = 'complained')
           FROM lists l LEFT JOIN memberships m ON m.list_id = l.id
           GROUP BY l.id ORDER BY l.slug"""
    )
    keys = ("slug", "title", "created", "active", "suppressed", "unsubscribed", "bounced")
    keys += ("complained",)
    return [dict(zip(keys, row, strict=True)) for row in cursor]


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
