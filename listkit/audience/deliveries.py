"""Which delivery a token names: the token derived from its id, or its legacy one.

A delivery's token is never stored (``tracking.delivery_token``: its id under
LISTKIT_SECRET); a delivery made before the ``m020_lean_deliveries`` migration
keeps the random token its mail carried as ``legacy_token``.

The rule: a token names a delivery only when it was signed with the secret (the
derived form) or is exactly a legacy token on record; anything else names none,
so a bounce, an unsubscribe or a sale cannot be pinned on a reader by a made-up
token. Every lookup of a delivery by token (links, unsubscribes, clicks, VERP
and Message-ID bounces, sales) goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import TypeVar

from sqlite_utils import Database

from listkit.mail.tracking import (
    coupon_delivery,
    delivery_of,
    is_token,
    is_token_head,
    token_bytes,
)

K = TypeVar("K", bound=Hashable)
# Legacy tokens looked up per query (as blob literals: hex digits only).
CHUNK = 500


def delivery_id(db: Database, secret: bytes, token: str | None) -> int | None:
    """The id of the delivery ``token`` names, or None."""
    return delivery_ids(db, secret, {0: token}).get(0)


def delivery_ids(db: Database, secret: bytes, tokens: Mapping[K, str | None]) -> dict[K, int]:
    """For each key whose token names a delivery, that delivery's id."""
    clean = {k: t.strip().lower() for k, t in tokens.items() if t and is_token(t.strip().lower())}
    derived = {k: d for k, t in clean.items() if (d := delivery_of(secret, t)) is not None}
    existing = _existing(db, derived.values())
    found = {k: d for k, d in derived.items() if d in existing}
    legacy = {k: token_bytes(t) for k, t in clean.items() if k not in found}
    by_token = _legacy(db, [f"legacy_token = X'{raw.hex()}'" for raw in set(legacy.values())])
    found.update({k: by_token[raw] for k, raw in legacy.items() if raw in by_token})
    return found


def coupon_deliveries(db: Database, secret: bytes, heads: Mapping[K, str]) -> dict[K, list[int]]:
    """For each key, the deliveries whose token begins with its 8 characters (a
    personal coupon's suffix): the one its derived token stands for, if it exists,
    and any legacy token's."""
    heads = {k: h.lower() for k, h in heads.items() if is_token_head(h.lower())}
    derived = {k: coupon_delivery(secret, h) for k, h in heads.items()}
    existing = _existing(db, derived.values())
    found: dict[K, list[int]] = {k: [d] for k, d in derived.items() if d in existing}
    prefixes = {k: token_bytes(h).hex() for k, h in heads.items()}
    ranges = [
        f"legacy_token BETWEEN X'{p}{'00' * 5}' AND X'{p}{'ff' * 5}'"
        for p in set(prefixes.values())
    ]
    by_token = _legacy(db, ranges)
    for raw, did in by_token.items():
        for k, p in prefixes.items():
            if raw[:5].hex() == p:
                found.setdefault(k, []).append(did)
    return found


def _existing(db: Database, ids) -> set[int]:
    ids = list(ids)
    if not ids:
        return set()
    return {
        r[0]
        for r in db.execute(
            "SELECT id FROM deliveries WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(ids)],
        )
    }


def _legacy(db: Database, conditions: list[str]) -> dict[bytes, int]:
    """{legacy token: delivery id} of the rows meeting any of ``conditions``."""
    found: dict[bytes, int] = {}
    for i in range(0, len(conditions), CHUNK):
        where = " OR ".join(conditions[i : i + CHUNK])
        for did, raw in db.execute(f"SELECT id, legacy_token FROM deliveries WHERE {where}"):
            found[bytes(raw)] = did
    return found
