"""Lists: named groups of subscribers (``lists`` table)."""

from __future__ import annotations

from sqlite_utils import Database

from listkit.errors import NotFound


def get_list(db: Database, slug: str) -> dict:
    """The list row for ``slug``; raises NotFound naming the slug."""
    row = db.execute("SELECT id, slug, title, created FROM lists WHERE slug = ?", [slug]).fetchone()
    if row is None:
        raise NotFound(f"no list named {slug!r}: see `listkit lists ls`")
    return dict(zip(("id", "slug", "title", "created"), row, strict=True))
