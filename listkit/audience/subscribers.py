"""Subscribers and their list memberships.

The rule: an address that is suppressed, or unsubscribed from a list, is never
made active again by an add or an import; the caller is told so. Names are
kept as ``names`` says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from sqlite_utils import Database

from listkit.addresses import email_key, normalize_address
from listkit.audience.deliveries import delivery_id
from listkit.audience.enrollments import enrol_joined
from listkit.audience.lists import get_list
from listkit.audience.provenance import (
    CONSENT_METHOD,
    CONSENT_SOURCE,
    MEMBER_CREATED,
    SUBSCRIBER_CREATED,
    SUBSCRIBER_SOURCE,
)
from listkit.audience.suppressions import suppress
from listkit.db import immediate, iso, now
from listkit.errors import InputError, NotFound
from listkit.mail.tracking import parse_unsubscribe_url, verify_unsubscribe
from listkit.names import MAX_NAME, clean_name, join_name, name_parts
from listkit.text import lines, one_line

# What composing a message needs of a subscriber (table alias ``s``), in the
# order ``subscriber_dict`` takes it.
SUBSCRIBER_COLUMNS = "s.id, s.email, s.key, s.name, s.first_name, s.last_name, s.fields"


def subscriber_dict(
    sid: int,
    email: str,
    key: str,
    name: str | None,
    first_name: str | None,
    last_name: str | None,
    fields: str,
) -> dict:
    """A subscriber as the composer takes it, from the ``SUBSCRIBER_COLUMNS`` of a row:
    first and last names as stored (None where only the full name is known),
    ``fields`` a dict."""
    return {
        "id": sid,
        "email": email,
        "key": key,
        "name": name,
        "first_name": first_name,
        "last_name": last_name,
        "fields": json.loads(fields),
    }


def iter_members(db: Database, list_slug: str, status: str = "active") -> Iterator[dict]:
    """Subscribers of a list with the given membership status, in id order, each
    a ``subscriber_dict``."""
    list_id = get_list(db, list_slug)["id"]
    cursor = db.execute(
        f"""SELECT {SUBSCRIBER_COLUMNS}
           FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
           WHERE m.list_id = ? AND m.status = ? ORDER BY s.id""",
        [list_id, status],
    )
    for row in cursor:
        yield subscriber_dict(*row)


def list_members(db: Database, list_slug: str) -> Iterator[dict]:
    """Every member of a list, whatever the status, with consent evidence."""
    list_id = get_list(db, list_slug)["id"]
    cursor = db.execute(
        f"""SELECT s.email, s.name, m.status, {MEMBER_CREATED}, m.consent_at, m.confirmed_at,
                  m.consent_ip, {CONSENT_SOURCE}, s.fields
           FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
           WHERE m.list_id = ? ORDER BY s.id""",
        [list_id],
    )
    keys = (
        "email",
        "name",
        "status",
        "joined",
        "consent_at",
        "confirmed_at",
        "consent_ip",
        "consent_source",
    )
    for row in cursor:
        member = dict(zip(keys, row[:-1], strict=True))
        member["fields"] = json.loads(row[-1])
        yield member


def add_subscriber(
    db: Database,
    email: str,
    list_slug: str,
    *,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    fields: dict[str, str] | None = None,
    source: str = "manual",
) -> dict:
    """Add ``email`` to a list, or update it; says what happened in ``result``.

    result: ``added`` (new subscriber), ``joined`` (known subscriber, new to the
    list), ``updated`` (already an active member), ``suppressed``,
    ``unsubscribed``, ``bounced``, ``complained`` or ``pending`` (kept as it
    was: not made active; a pending member becomes active by confirming).
    Names are cleaned and field values trimmed (``_renamed``, ``_clean_fields``);
    an empty or missing name leaves a known subscriber's name as it was.
    """
    address = normalize_address(email)
    key = email_key(address)
    fields = _clean_fields(fields)
    given = tuple(v or None for v in (name, first_name, last_name))
    _renamed((None, None, None), *given)  # refuse an overlong name before anything
    lst = get_list(db, list_slug)
    stamp = now()
    with immediate(db):
        row = db.execute(
            "SELECT id, name, first_name, last_name, fields FROM subscribers WHERE key = ?", [key]
        ).fetchone()
        if row is None:
            names = _renamed((None, None, None), *given)
            sid = db.execute(
                """INSERT INTO subscribers (email, key, name, first_name, last_name, fields,
                   created, updated, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [address, key, *names, json.dumps(fields), stamp, stamp, source],
            ).lastrowid
            result = "added"
        else:
            sid, *old, old_fields = row
            _update_subscriber(db, sid, _renamed(tuple(old), *given), old_fields, fields, stamp)
            result = "updated"
        suppression = db.execute("SELECT reason FROM suppressions WHERE key = ?", [key]).fetchone()
        member = db.execute(
            "SELECT status FROM memberships WHERE list_id = ? AND subscriber_id = ?",
            [lst["id"], sid],
        ).fetchone()
        if member is None:
            status = "active" if suppression is None else "unsubscribed"
            db.execute(
                """INSERT INTO memberships (list_id, subscriber_id, status, created, consent_at,
                   consent_method, consent_source, status_at, status_reason)
                   VALUES (?, ?, ?, ?, ?, 'manual', ?, ?, ?)""",
                [
                    lst["id"],
                    sid,
                    status,
                    stamp,
                    stamp,
                    source,
                    stamp,
                    None if suppression is None else f"suppressed: {suppression[0]}",
                ],
            )
            if result == "updated":
                result = "joined"
            if status == "active":
                enrol_joined(db, sid, lst["id"], at=datetime.fromisoformat(stamp))
        elif member[0] != "active":
            result = member[0]
        if suppression is not None:
            result = "suppressed"
    return {"email": address, "list": list_slug, "result": result}


def _clean_fields(fields: dict[str, str] | None) -> dict[str, str]:
    """Custom fields as stored: one-line names, values trimmed with their line breaks."""
    return {one_line(k): lines(v) for k, v in (fields or {}).items()}


def _renamed(
    old: tuple[str | None, str | None, str | None],
    name: str | None,
    first_name: str | None,
    last_name: str | None,
) -> tuple[str | None, str | None, str | None]:
    """(name, first name, last name) after a change to ``old``.

    None leaves a part as it was and an empty string clears it. A new full name
    alone replaces the parts (they are then split from it); a new first or last
    name keeps the other part and makes the full name the two joined, unless a
    full name is given too. InputError for a name over ``MAX_NAME`` characters.
    """
    if first_name is None and last_name is None:
        new = old if name is None else (clean_name(name), None, None)
    else:
        old_first, old_last = name_parts(*old)
        first = old_first if first_name is None else clean_name(first_name)
        last = old_last if last_name is None else clean_name(last_name)
        full = join_name(first, last) if name is None else clean_name(name)
        new = (full, first, last)
    for label, value in zip(("name", "first name", "last name"), new, strict=True):
        if value is not None and len(value) > MAX_NAME:
            raise InputError(f"{label} is longer than {MAX_NAME} characters")
    return new


def _update_subscriber(
    db: Database,
    sid: int,
    names: tuple[str | None, str | None, str | None],
    old_fields: str,
    fields: dict[str, str],
    stamp: str,
) -> None:
    merged = {**json.loads(old_fields), **fields}
    db.execute(
        """UPDATE subscribers SET name = ?, first_name = ?, last_name = ?, fields = ?,
           updated = ? WHERE id = ?""",
        [*names, json.dumps(merged), stamp, sid],
    )


def set_subscriber(
    db: Database,
    who: str,
    *,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    fields: dict[str, str] | None = None,
) -> dict:
    """Change the name or custom fields of a known subscriber, by address or by id.

    None leaves a value as it was; an empty name clears it (see ``_renamed``).
    Memberships are not touched. Returns the subscriber's address, full name
    and first and last names as templates see them.
    """
    by_id = who.strip().isdigit()
    with immediate(db):
        row = db.execute(
            "SELECT id, email, name, first_name, last_name, fields FROM subscribers WHERE "
            + ("id = ?" if by_id else "key = ?"),
            [int(who) if by_id else email_key(who)],
        ).fetchone()
        if row is None:
            who = who.strip()
            raise NotFound(f"no subscriber with id {who}" if by_id else f"no subscriber {who!r}")
        sid, address, *old, old_fields = row
        names = _renamed(tuple(old), name, first_name, last_name)
        _update_subscriber(db, sid, names, old_fields, _clean_fields(fields), now())
    first, last = name_parts(*names)
    return {"id": sid, "email": address, "name": names[0], "first_name": first, "last_name": last}


def get_subscriber(db: Database, email: str) -> dict:
    """A subscriber with memberships, suppression and delivery counts."""
    key = email_key(email)
    row = db.execute(
        f"""SELECT s.id, s.email, s.name, s.first_name, s.last_name, s.fields,
                  {SUBSCRIBER_CREATED}, {SUBSCRIBER_SOURCE}
           FROM subscribers s WHERE s.key = ?""",
        [key],
    ).fetchone()
    suppression = db.execute(
        """SELECT s.reason, s.created, c.slug FROM suppressions s
           LEFT JOIN campaigns c ON c.id = s.campaign_id WHERE s.key = ?""",
        [key],
    ).fetchone()
    if row is None and suppression is None:
        raise NotFound(f"no subscriber {email.strip()!r}")
    result: dict = {"email": email.strip(), "suppressed": None, "lists": [], "deliveries": {}}
    if suppression is not None:
        result["suppressed"] = dict(zip(("reason", "at", "campaign"), suppression, strict=True))
    if row is None:
        return result
    sid, address, name, first, last, fields, created, source = row
    first, last = name_parts(name, first, last)
    result.update(
        {"id": sid, "email": address, "name": name, "first_name": first, "last_name": last}
        | {"fields": json.loads(fields), "created": created, "source": source}
    )
    keys = ("list", "status", "joined", "consent_at", "consent_method", "consent_source")
    keys += ("consent_ip", "confirmed_at", "confirm_ip", "status_at", "status_reason")
    result["lists"] = [
        dict(zip(keys, r, strict=True))
        for r in db.execute(
            f"""SELECT l.slug, m.status, {MEMBER_CREATED}, m.consent_at, {CONSENT_METHOD},
                      {CONSENT_SOURCE}, m.consent_ip, m.confirmed_at, m.confirm_ip,
                      m.status_at, m.status_reason
               FROM memberships m JOIN lists l ON l.id = m.list_id
               WHERE m.subscriber_id = ? ORDER BY l.slug""",
            [sid],
        )
    ]
    result["deliveries"] = dict(
        db.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE subscriber_id = ? GROUP BY state", [sid]
        ).fetchall()
    )
    return result


def unsubscribe(
    db: Database, email: str, list_slug: str | None = None, *, campaign_id: int | None = None
) -> dict:
    """Unsubscribe from one list, or (no list) from everything, which also suppresses.

    Returns ``{"email", "lists": [slugs changed], "suppressed": bool}``.
    """
    with immediate(db):
        return unsubscribe_core(db, email, list_slug, campaign_id=campaign_id)


def unsubscribe_core(
    db: Database, email: str, list_slug: str | None = None, *, campaign_id: int | None = None
) -> dict:
    """``unsubscribe`` inside the caller's transaction (it opens none itself)."""
    key = email_key(email)
    row = db.execute("SELECT id, email FROM subscribers WHERE key = ?", [key]).fetchone()
    stamp = now()
    reason = "unsubscribed" + (f" (campaign {campaign_id})" if campaign_id else "")
    changed: list[str] = []
    if row is not None:
        where = "m.subscriber_id = ? AND m.status IN ('active', 'pending')"
        params: list = [row[0]]
        if list_slug is not None:
            where += " AND m.list_id = ?"
            params.append(get_list(db, list_slug)["id"])
        changed = [
            r[0]
            for r in db.execute(
                f"""SELECT l.slug FROM memberships m JOIN lists l ON l.id = m.list_id
                    WHERE {where} ORDER BY l.slug""",
                params,
            )
        ]
        db.execute(
            f"""UPDATE memberships AS m SET status = 'unsubscribed', status_at = ?,
                status_reason = ?, updated = ? WHERE {where}""",
            [stamp, reason, stamp, *params],
        )
    elif list_slug is not None:
        get_list(db, list_slug)
        raise NotFound(f"{email.strip()!r} is not on list {list_slug!r}")
    suppressed = False
    if list_slug is None:
        suppressed = suppress(db, row[1] if row else email, "unsubscribed", campaign_id=campaign_id)
    return {"email": row[1] if row else email.strip(), "lists": changed, "suppressed": suppressed}


def find_subscriber(db: Database, email: str) -> tuple[dict, dict | None] | None:
    """(subscriber, first active list or None) for ``email``, as the sender sees them."""
    row = db.execute(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.key = ?", [email_key(email)]
    ).fetchone()
    if row is None:
        return None
    subscriber = subscriber_dict(*row)
    lst = db.execute(
        """SELECT l.slug, l.title FROM memberships m JOIN lists l ON l.id = m.list_id
           WHERE m.subscriber_id = ? AND m.status = 'active' ORDER BY l.slug LIMIT 1""",
        [subscriber["id"]],
    ).fetchone()
    return subscriber, ({"slug": lst[0], "title": lst[1]} if lst else None)


def unsubscribe_by_link(db: Database, secret: bytes, url: str, *, everything: bool = False) -> dict:
    """Honour a one-click unsubscribe link as the link itself does: verify its
    signature, unsubscribe the delivery's address from the delivery's list (or
    from everything), stop the campaign and its follow-ups for them, and record
    the campaign that caused it."""
    try:
        token, signature = parse_unsubscribe_url(url)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not verify_unsubscribe(secret, token, signature):
        raise InputError("the link's signature does not match LISTKIT_SECRET: not a link we sent")
    with immediate(db):
        result = unsubscribe_delivery(db, secret, token, everything=everything, url=url)
    if result is None:
        raise NotFound(f"no delivery has token {token}")
    return result


def delivery_by_token(db: Database, secret: bytes, token: str) -> dict | None:
    """The delivery a token names (``deliveries.delivery_id``), with the address it went
    to, its list and campaign, or None."""
    did = delivery_id(db, secret, token)
    if did is None:
        return None
    row = db.execute(
        """SELECT d.id, coalesce(d.sent_to, s.email), d.campaign_id, c.slug, l.slug, l.title,
                  d.sent_unix
           FROM deliveries d JOIN lists l ON l.id = d.list_id
           JOIN subscribers s ON s.id = d.subscriber_id
           JOIN campaigns c ON c.id = d.campaign_id WHERE d.id = ?""",
        [did],
    ).fetchone()
    keys = ("id", "email", "campaign_id", "campaign", "list", "list_title", "sent_at")
    return dict(zip(keys, (*row[:-1], iso(row[-1])), strict=True))


def unsubscribe_delivery(
    db: Database,
    secret: bytes,
    token: str,
    *,
    everything: bool,
    url: str | None = None,
    ip: str | None = None,
    agent: str | None = None,
) -> dict | None:
    """Unsubscribe the address of the delivery ``token`` names (the caller checked the
    signature) from that delivery's list, or from everything; None for an unknown token.

    Runs inside the caller's transaction. The ``unsubscribe`` event is recorded once
    per delivery, however often the link is used: a repeated one-click POST changes
    nothing more. ``result["first"]`` says whether this call recorded it.
    """
    delivery = delivery_by_token(db, secret, token)
    if delivery is None:
        return None
    cursor = db.execute(
        """INSERT INTO events (delivery_id, kind, at, url, ip, agent)
           SELECT ?, 'unsubscribe', ?, ?, ?, ? WHERE NOT EXISTS
             (SELECT 1 FROM events WHERE delivery_id = ? AND kind = 'unsubscribe')""",
        [delivery["id"], now(), url, ip, agent, delivery["id"]],
    )
    result = unsubscribe_core(
        db,
        delivery["email"],
        None if everything else delivery["list"],
        campaign_id=delivery["campaign_id"],
    )
    return {
        **result,
        **_standing(db, delivery),
        "first": cursor.rowcount == 1,
        "everything": everything,
        "already": False,
    }


def delivery_standing(db: Database, secret: bytes, token: str) -> dict | None:
    """Where the reader of the delivery ``token`` names stands now (None for an
    unknown token), in the shape ``unsubscribe_delivery`` answers: ``email``,
    ``list``, ``list_title``, ``declined`` (its link was used: the campaign and
    its follow-ups stop for them), ``suppressed``, ``left`` (no longer on the
    delivery's list), ``still_on`` (titles of the lists they are on), and
    ``everything``/``already`` (True when suppressed: nothing more to ask)."""
    delivery = delivery_by_token(db, secret, token)
    if delivery is None:
        return None
    standing = _standing(db, delivery)
    return {
        "email": delivery["email"],
        **standing,
        "everything": standing["suppressed"],
        "already": standing["suppressed"] or standing["left"],
    }


def _standing(db: Database, delivery: dict) -> dict:
    row = db.execute(
        """SELECT s.id, EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key),
                  EXISTS (SELECT 1 FROM events WHERE delivery_id = ? AND kind = 'unsubscribe'),
                  (SELECT m.status FROM memberships m JOIN deliveries d ON d.id = ?
                   WHERE m.subscriber_id = d.subscriber_id AND m.list_id = d.list_id)
           FROM subscribers s JOIN deliveries d ON d.subscriber_id = s.id WHERE d.id = ?""",
        [delivery["id"], delivery["id"], delivery["id"]],
    ).fetchone()
    sid, suppressed, declined, status = row
    still_on = [
        r[0]
        for r in db.execute(
            """SELECT coalesce(l.title, l.slug) FROM memberships m JOIN lists l ON l.id = m.list_id
               WHERE m.subscriber_id = ? AND m.status = 'active' ORDER BY l.slug""",
            [sid],
        )
    ]
    return {
        "list": delivery["list"],
        "list_title": delivery["list_title"],
        "campaign": delivery["campaign"],
        "suppressed": bool(suppressed),
        "declined": bool(declined),
        "left": status not in ("active", "pending"),
        "still_on": [] if suppressed else still_on,
    }


def describe_unsubscribe(result: dict) -> tuple[str, list[str]]:
    """What an unsubscribe through a message's link did, in the reader's words: a
    heading and sentences. The unsubscribe page and `listkit unsubscribe URL` say
    the same."""
    list_name = result["list_title"] or result["list"]
    already = "already " if result["already"] else ""
    if result["everything"] or result["suppressed"]:
        return f"You are {already}unsubscribed from everything", [
            "You will receive nothing more from us, on any list."
        ]
    lines = [f"You left {list_name}."]
    if result["declined"]:
        lines.append("This campaign and its follow-ups will not reach you, on any list.")
    if result["still_on"]:
        lines.append(f"You are still on {', '.join(result['still_on'])}.")
    return f"You are {already}unsubscribed from {list_name}", lines
