"""Subscribers and their list memberships."""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlite_utils import Database

from listkit.lists import get_list


def iter_members(db: Database, list_slug: str, status: str = "active") -> Iterator[dict]:
    """Subscribers of a list with the given membership status, in id order.

    Each is ``{"id", "email", "key", "name", "fields"}`` with ``fields`` a dict.
    """
    list_id = get_list(db, list_slug)["id"]
    cursor = db.execute(
        """SELECT s.id, s.email, s.key, s.name, s.fields
           FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
           WHERE m.list_id = ? AND m.status = ? ORDER BY s.id""",
        [list_id, status],
    )
    for sid, email, key, name, fields in cursor:
        yield {"id": sid, "email": email, "key": key, "name": name, "fields": json.loads(fields)}
