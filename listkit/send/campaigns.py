"""Campaigns: ``campaigns/<slug>.toml`` (which offer to which lists, when) and audiences.

The rule: a subscriber on several of a campaign's lists gets one message,
targeted through the first list it is on, in the order the campaign lists
them; excluded lists, suppressions and inactive memberships never mail, nor
does a follow-up to a reader who unsubscribed from a message of a campaign it
follows (on whatever list).
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from listkit.audience.audiences import PURCHASES, Resolver, Rule, rules_from_table
from listkit.audience.lists import check_slug, get_list
from listkit.audience.subscribers import SUBSCRIBER_COLUMNS, subscriber_dict
from listkit.audience.suppressions import DECLINED
from listkit.db import clock, now
from listkit.errors import InputError, NotFound
from listkit.times import format_duration, parse_duration

FIELDS = {
    "offer",
    "lists",
    "exclude_lists",
    "send_at",
    "max_late",
    "rate",
    "concurrency",
    "holdout",
    "attribution_days",
    "where",
    "follows",
    "after",
    "variants",
    "split",
    "test_share",
    "test_wait",
    "sells",
}
# Limits past which a value is a typo, not a plan.
MAX_RATE = 10_000  # messages a second
MAX_ATTRIBUTION_DAYS = 365
SEND_AT_YEARS = (2000, 2100)


@dataclass(frozen=True)
class Campaign:
    slug: str
    offer: str
    lists: tuple[str, ...]
    exclude_lists: tuple[str, ...] = ()
    send_at: datetime | None = None
    max_late: timedelta | None = None
    rate: float = 0.0
    concurrency: int = 4
    holdout: float = 0.0
    attribution_days: int = 7
    path: Path = field(default=Path("."), compare=False)
    where: tuple[Rule, ...] = ()
    follows: str | None = None
    after: timedelta | None = None
    variants: tuple[str, ...] = ()
    split: tuple[float, ...] = ()
    test_share: float = 0.0
    test_wait: timedelta | None = None
    sells: bool = True

    @property
    def offers(self) -> tuple[str, ...]:
        """Every offer the campaign sends: its variants, or its one offer."""
        return self.variants or (self.offer,)


def check_campaign_slug(slug: str) -> str:
    """A campaign is named by its slug alone: no path, no other spelling of the same file."""
    return check_slug(slug, "campaign")


def _read_toml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path}: not UTF-8 (line {line}, byte 0x{raw[e.start]:02x}): save the file as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: {e}") from None


def load_campaign(campaigns_dir: Path, slug: str) -> Campaign:
    """Read and check ``campaigns/<slug>.toml``; errors name the file and the field.

    Any problem with the file is an ``InputError`` (never another exception), so
    that one bad file never stops the commands that go through every campaign.
    """
    path, data = _campaign_file(campaigns_dir, slug)
    extra = _extensions(data, path)
    if extra["variants"] and "offer" not in data:
        offer = extra["variants"][0]
    else:
        offer = _name(path, _field(data, path, "offer", str), "offer", "offer")
    lists, exclude = _lists(data, path)
    send_at = _send_at(data, path)
    max_late = parse_duration(_field(data, path, "max_late", str, "6h"), f"{path}: field max_late")
    return Campaign(
        slug=slug,
        offer=offer,
        lists=lists,
        exclude_lists=exclude,
        send_at=send_at,
        max_late=max_late,
        **_pace(data, path),
        path=path,
        **extra,
    )


def _campaign_file(campaigns_dir: Path, slug: str) -> tuple[Path, dict]:
    """The path and fields of ``campaigns/<slug>.toml``, every field a known one."""
    return read_toml_file(campaigns_dir, slug, "campaign", FIELDS)


def read_toml_file(folder: Path, slug: str, kind: str, fields: Iterable[str]) -> tuple[Path, dict]:
    """The path and fields of ``<folder>/<slug>.toml`` (a campaign's or a sequence's:
    ``kind``), every field one of ``fields``: a missing file names those there are,
    an unknown field those that are known."""
    check_slug(slug, kind)
    path = folder / f"{slug}.toml"
    if not path.is_file():
        known = ", ".join(campaign_slugs(folder)) or "none"
        raise NotFound(f"no {kind} {slug!r} in {folder} ({kind}s: {known})")
    data = _read_toml(path)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(
            f"{path}: unknown field {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
        )
    return path, data


def _field(data: dict, path: Path, key: str, kind: type | tuple[type, ...], default=None):
    """Field ``key`` of the file, of type ``kind``; ``default`` when absent, else required."""
    if key not in data:
        if default is None:
            raise InputError(f"{path}: missing field {key}")
        return default
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{path}: field {key} has the wrong type ({value!r})")
    return value


def _name(path: Path, value: str, what: str, key: str) -> str:
    """``value`` checked as the slug of a ``what`` (offer, list), named by its field."""
    try:
        return check_slug(value, what)
    except InputError as e:
        raise InputError(f"{path}: field {key}: {e}") from None


def _lists(data: dict, path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The lists the campaign mails and those it excludes, each a list's slug."""
    lists = _field(data, path, "lists", list)
    if not lists or not all(isinstance(x, str) for x in lists):
        raise InputError(f"{path}: field lists must be a non-empty list of list names")
    exclude = _field(data, path, "exclude_lists", list, [])
    if not all(isinstance(x, str) for x in exclude):
        raise InputError(f"{path}: field exclude_lists must be a list of list names")
    for key, names in (("lists", lists), ("exclude_lists", exclude)):
        for value in names:
            _name(path, value, "list", key)
    return tuple(lists), tuple(exclude)


def _send_at(data: dict, path: Path) -> datetime | None:
    """Field send_at: an ISO 8601 time with its UTC offset, or None when absent."""
    if "send_at" not in data:
        return None
    raw = data["send_at"]
    if isinstance(raw, datetime):
        send_at = raw
    elif isinstance(raw, str):
        try:
            send_at = datetime.fromisoformat(raw)
        except ValueError:
            raise InputError(f"{path}: field send_at {raw!r} is not an ISO 8601 time") from None
    else:
        raise InputError(f"{path}: field send_at must be an ISO 8601 time with offset")
    if send_at.tzinfo is None:
        raise InputError(
            f"{path}: field send_at {raw!s} has no UTC offset: write e.g. 2026-12-01T09:00:00+01:00"
        )
    first, last = SEND_AT_YEARS
    # Compared as naive local times: a time near year 1 or 9999 cannot be
    # converted to UTC at all.
    if not first <= send_at.year < last:
        raise InputError(f"{path}: field send_at {raw!s} is not between {first} and {last}")
    return send_at


def _pace(data: dict, path: Path) -> dict:
    """The rate, concurrency, holdout and attribution window, each within its bounds."""
    rate = float(_field(data, path, "rate", (int, float), 0))
    concurrency = _field(data, path, "concurrency", int, 4)
    holdout = float(_field(data, path, "holdout", (int, float), 0))
    days = _field(data, path, "attribution_days", int, 7)
    if not math.isfinite(rate):
        raise InputError(f"{path}: field rate {rate} is not a number of messages per second")
    if rate < 0:
        raise InputError(f"{path}: field rate must be 0 (unlimited) or more messages per second")
    if rate > MAX_RATE:
        raise InputError(
            f"{path}: field rate {rate} is too high: at most {MAX_RATE} messages a second "
            "(0 means unlimited)"
        )
    if not 1 <= concurrency <= 100:
        raise InputError(f"{path}: field concurrency must be between 1 and 100 connections")
    if not 0 <= holdout < 1:  # false for nan too
        raise InputError(f"{path}: field holdout {holdout} must be a fraction from 0 to below 1")
    if not 0 <= days <= MAX_ATTRIBUTION_DAYS:
        raise InputError(
            f"{path}: field attribution_days must be from 0 to {MAX_ATTRIBUTION_DAYS} days"
        )
    return {"rate": rate, "concurrency": concurrency, "holdout": holdout, "attribution_days": days}


def _extensions(data: dict, path: Path) -> dict:
    """The audience rules, follow-up and variant fields of a campaign file."""
    where = rules_from_table(data["where"], f"{path}: [where]") if "where" in data else ()
    follows = data.get("follows")
    after = None
    if follows is not None:
        if not isinstance(follows, str):
            raise InputError(f"{path}: field follows must name a campaign, e.g. follows = 'launch'")
        check_slug(follows, "campaign")
        if follows == path.stem:
            raise InputError(f"{path}: field follows names the campaign itself")
        if not (path.parent / f"{follows}.toml").is_file():
            known = ", ".join(campaign_slugs(path.parent)) or "none"
            raise InputError(
                f"{path}: field follows: no campaign {follows!r} in {path.parent} "
                f"(campaigns: {known})"
            )
        if "send_at" in data:
            raise InputError(
                f"{path}: a follow-up is due `after` the campaign it follows: drop send_at"
            )
        if not isinstance(data.get("after"), str):
            raise InputError(
                f"{path}: a follow-up needs field after: how long after {follows} finished "
                "sending, e.g. after = '2d'"
            )
        after = parse_duration(data["after"], f"{path}: field after")
    elif "after" in data:
        raise InputError(f"{path}: field after needs follows = 'CAMPAIGN'")
    variants = data.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise InputError(f"{path}: field variants must be a list of offer names")
    if variants and len(variants) < 2:
        raise InputError(f"{path}: field variants needs two or more offers")
    if len(set(variants)) != len(variants):
        raise InputError(f"{path}: field variants names an offer twice")
    if variants and "offer" in data and data["offer"] not in variants:
        raise InputError(f"{path}: give either offer or variants, not both")
    split = data.get("split")
    if split is None:
        split = [1 / len(variants)] * len(variants) if variants else []
    elif not variants:
        raise InputError(f"{path}: field split needs variants")
    elif (
        not isinstance(split, list)
        or len(split) != len(variants)
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in split)
    ):
        raise InputError(
            f"{path}: field split needs one positive share per variant, e.g. [0.5, 0.5]"
        )
    total = float(sum(split))
    test_share, test_wait = data.get("test_share", 0), None
    if "test_share" in data or "test_wait" in data:
        if not variants:
            raise InputError(f"{path}: test_share and test_wait need variants")
        if (
            isinstance(test_share, bool)
            or not isinstance(test_share, int | float)
            or not 0 < test_share < 1
        ):
            raise InputError(
                f"{path}: field test_share must be a fraction above 0 and below 1 (e.g. 0.2)"
            )
        if not isinstance(data.get("test_wait"), str):
            raise InputError(
                f"{path}: test_share needs field test_wait: how long after the test part "
                "finished the rest gets the winner, e.g. test_wait = '1d'"
            )
        test_wait = parse_duration(data["test_wait"], f"{path}: field test_wait")
    check_sells(data, str(path))
    return {
        "sells": sells(data),
        "test_share": float(test_share),
        "test_wait": test_wait,
        "where": where,
        "follows": follows,
        "after": after,
        "variants": tuple(variants),
        "split": tuple(float(x) / total for x in split),
    }


def campaign_slugs(campaigns_dir: Path) -> list[str]:
    return sorted(p.stem for p in campaigns_dir.glob("*.toml")) if campaigns_dir.is_dir() else []


def sells(data: dict) -> bool:
    """Whether a message sells: the one rule for what a selling message is, for a
    campaign file and a sequence's ``[[steps]]`` table alike.

    Every offer names a product, a price and a buy link (``mail.offers``), so a
    message sells, unless its campaign file or its step says ``sells = false``:
    a newsletter or a useful message that asks for nothing. Selling messages are
    the ones the reader's quiet period after a purchase and the frequency cap
    hold back (``respect``)."""
    return data.get("sells", True) is not False


def check_sells(data: dict, where: str) -> None:
    """``sells``, if given, is true or false (``where``: the file, or the file's step)."""
    if not isinstance(data.get("sells", True), bool):
        raise InputError(
            f"{where}: field sells must be true or false (false: a newsletter that sells nothing)"
        )


# Whether a recorded step sells, as its sequence's file said when last read (the
# sequence row's steps); NULL when the step is not found there.
STEP_SELLS = """(SELECT json_extract(j.value, '$.sells') FROM sequences q, json_each(q.steps) j
                 WHERE q.id = c.sequence_id AND json_extract(j.value, '$.name') = c.step)"""


def selling_campaigns(db: Database, campaigns_dir: Path) -> list[int]:
    """Ids of the recorded campaigns and sequence steps whose messages sell (``sells``;
    a step's as its sequence recorded it). A campaign whose file is gone or unreadable,
    or a step no longer known, counts as selling: in doubt, the reader is spared."""
    ids = []
    for cid, slug, sequence_id, step_sells in db.execute(
        f"SELECT c.id, c.slug, c.sequence_id, {STEP_SELLS} FROM campaigns c"
    ):
        if sequence_id is not None:
            selling = step_sells is None or bool(step_sells)
        else:
            try:
                selling = sells(_read_toml(campaigns_dir / f"{slug}.toml"))
            except InputError:
                selling = True
        if selling:
            ids.append(cid)
    return ids


def held_out(campaign_slug: str, key: str, fraction: float) -> bool:
    """Reproducibly choose ``fraction`` of an audience to keep back."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{campaign_slug}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def followed_campaign(db: Database, slug: str) -> tuple | None:
    """(id, state, started, finished) of the campaign a follow-up follows, or None."""
    return db.execute(
        "SELECT id, state, started, finished FROM campaigns WHERE slug = ?", [slug]
    ).fetchone()


def followup_condition(db: Database, campaign) -> tuple[str, list]:
    """``AND s.id IN (the first campaign's recipients)`` for a follow-up, else nothing."""
    if not campaign.follows:
        return "", []
    row = followed_campaign(db, campaign.follows)
    return (
        " AND s.id IN (SELECT subscriber_id FROM deliveries WHERE campaign_id = ? "
        "AND state = 'sent')",
        [row[0] if row else -1],
    )


def not_bought_since_first(db: Database, campaign) -> tuple[str, list]:
    """The default rule of a follow-up: no purchase since the first campaign started."""
    row = followed_campaign(db, campaign.follows)
    if row is None or row[2] is None:
        return "", []
    return f" AND NOT (s.id IN (SELECT sid FROM ({PURCHASES}) WHERE at >= ?))", [row[2]]


def _audience_sql(
    campaign: Campaign, db: Database, rules: tuple[Rule, ...] | None = None, ordered: bool = True
) -> tuple[str, list]:
    """SQL yielding (subscriber_id, email, key, list_id) for the audience.

    ``rules``: only these of the campaign's rules (the audience check counts
    them one by one); the follow-up restriction always applies.
    """
    rules = campaign.where if rules is None else rules
    narrow, narrow_params = followup_condition(db, campaign)
    rule_sql, rule_params = _resolver(db, campaign).conditions(rules)
    if campaign.follows and not any(r.name in ("bought", "not_bought") for r in campaign.where):
        cond, params = not_bought_since_first(db, campaign)
        rule_sql, rule_params = rule_sql + cond, rule_params + params
    rule_sql += f" AND s.id NOT IN ({DECLINED})"
    rule_params = [*rule_params, json.dumps(declined_campaigns(db, campaign))]
    list_ids = [get_list(db, slug)["id"] for slug in campaign.lists]
    exclude_ids = [get_list(db, slug)["id"] for slug in campaign.exclude_lists]
    rank = " ".join(f"WHEN {lid} THEN {i}" for i, lid in enumerate(list_ids))
    exclude, exclude_params = "", []
    if exclude_ids:
        exclude = """AND NOT EXISTS (SELECT 1 FROM memberships e WHERE e.subscriber_id = s.id
                          AND e.list_id IN (SELECT value FROM json_each(?)))"""
        exclude_params = [json.dumps(exclude_ids)]
    # One pass over the active memberships of the lists, grouped by subscriber:
    # SQLite takes list_id from the row holding the min() rank (a bare column
    # beside min()), so each subscriber comes once, through the first of the
    # campaign's lists it is on. The unary + keeps SQLite from walking every
    # membership in subscriber order to group them: it reads only the lists'
    # (by the status index) and sorts those.
    sql = f"""
        SELECT s.id, s.email, s.key, a.list_id
        FROM (SELECT m.subscriber_id AS sid, m.list_id AS list_id,
                     min(CASE m.list_id {rank} END) AS list_rank
              FROM memberships m
              WHERE m.list_id IN (SELECT value FROM json_each(?)) AND m.status = 'active'
              GROUP BY +m.subscriber_id) a
        JOIN subscribers s ON s.id = a.sid
        WHERE NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key)
          {exclude}{narrow}{rule_sql}
        {"ORDER BY s.id" if ordered else ""}"""
    return sql, [json.dumps(list_ids), *exclude_params, *narrow_params, *rule_params]


def lineage(campaign: Campaign) -> tuple[str, ...]:
    """The campaign and the campaigns it follows, back to the first (slugs, nearest first).

    Only each file's ``follows`` is read: a mistake elsewhere in a campaign up
    the chain is that campaign's error, not a reason to lose the chain."""
    slugs, follows = [campaign.slug], campaign.follows
    while follows and follows not in slugs:
        slugs.append(follows)
        path = campaign.path.parent / f"{follows}.toml"
        if not path.is_file():
            break
        follows = _read_toml(path).get("follows")
        follows = follows if isinstance(follows, str) else None
    return tuple(slugs)


def declined_campaigns(db: Database, campaign: Campaign) -> list[int]:
    """Ids of the campaigns a reader's "no" to stops this one for them (``DECLINED``):
    it and every campaign it follows, once they have been sent; for a step of a
    sequence, every step of that sequence."""
    slugs = json.dumps(lineage(campaign))
    return [
        row[0]
        for row in db.execute(
            """SELECT id FROM campaigns WHERE slug IN (SELECT value FROM json_each(?))
               OR sequence_id IN (SELECT sequence_id FROM campaigns
                                  WHERE slug IN (SELECT value FROM json_each(?)))""",
            [slugs, slugs],
        )
    ]


def _resolver(db: Database, campaign: Campaign) -> Resolver:
    """Rules checked against the database and the workspace's offers (beside campaigns/)."""
    offers_dir = campaign.path.parent.parent / "offers" if campaign.path != Path(".") else None
    return Resolver(db, offers=campaign.offers, offers_dir=offers_dir)


def audience_breakdown(db: Database, campaign: Campaign) -> dict:
    """The audience per list before the rules, with each rule alone, with each rule and
    those before it, and after all of them: one pass over the audience."""
    resolver = _resolver(db, campaign)
    conds = [resolver.condition(rule) for rule in campaign.where]
    sql, params = _audience_sql(campaign, db, rules=(), ordered=False)
    # Each rule once per recipient (a materialised 0/1 column), then the sums. A
    # rule that is neither true nor false (a custom field the subscriber lacks)
    # keeps them out of the audience, as in the WHERE clause: it counts 0, never
    # NULL (a list whose members all lack the field would sum to NULL).
    flags = "".join(f", coalesce(({cond}), 0) AS r{i}" for i, (cond, _p) in enumerate(conds))
    fparams = [x for _c, p in conds for x in p]
    n = len(conds)
    sums = ["COUNT(*)", *(f"SUM(r{i})" for i in range(n))]
    sums += ["SUM(" + " AND ".join(f"r{i}" for i in range(k)) + ")" for k in range(2, n + 1)]
    rows = db.execute(
        f"""WITH a AS MATERIALIZED (SELECT a.list_id{flags} FROM ({sql}) a
                                    JOIN subscribers s ON s.id = a.id)
            SELECT list_id, {", ".join(sums)} FROM a GROUP BY list_id""",
        [*fparams, *params],
    ).fetchall()
    names = dict(db.execute("SELECT id, slug FROM lists").fetchall())
    per_list = {slug: 0 for slug in campaign.lists}
    base, alone, cumulative = 0, [0] * n, [0] * n
    for row in rows:
        base += row[1]
        for i in range(n):
            alone[i] += row[2 + i]
            cumulative[i] += row[2 + i] if i == 0 else row[2 + n + i - 1]
        per_list[names[row[0]]] = row[-1]  # after every rule (the count when none)
    return {
        "lists": base,
        "rules": [
            {"rule": rule.label, "alone": alone[i], "with_previous": cumulative[i]}
            for i, rule in enumerate(campaign.where)
        ],
        "per_list": per_list,
        "total": sum(per_list.values()),
    }


def describe_audience(db: Database, campaign: Campaign) -> tuple[list[str], dict[str, int]]:
    """Lines for `campaigns check` (what narrows the audience, rule by rule) and the
    recipients per list; one pass over the audience."""
    lines = []
    per_list = None
    if campaign.follows:
        default = (
            ""
            if any(r.name in ("bought", "not_bought") for r in campaign.where)
            else ", who have bought nothing since it started"
        )
        lines.append(
            f"follows {campaign.follows}, {format_duration(campaign.after)} after it finished: "
            f"to its recipients (never its held-out group){default}"
        )
        first = campaign_row(db, campaign.follows)
        if first is None or first["state"] != "done":
            lines.append(
                f"{campaign.follows} has not finished sending: its recipients, and so this "
                "audience, are not known yet"
            )
    if campaign.where:
        b = audience_breakdown(db, campaign)
        per_list = b["per_list"]
        lines.append(f"lists before the rules: {b['lists']} recipients")
        for r in b["rules"]:
            lines.append(
                f"rule {r['rule']}: {r['alone']} alone, {r['with_previous']} with the rules above"
            )
    if campaign.variants:
        shares = ", ".join(
            f"{v} {share:.0%}" for v, share in zip(campaign.variants, campaign.split, strict=True)
        )
        lines.append(f"variants (a stable draw per subscriber): {shares}")
    if campaign.holdout:
        lines.append(f"holdout: {campaign.holdout:.0%} kept back")
    return lines, per_list if per_list is not None else audience_count(db, campaign)


def audience_count(db: Database, campaign: Campaign) -> dict[str, int]:
    """Recipients per targeted list after exclusions and suppressions."""
    sql, params = _audience_sql(campaign, db, ordered=False)
    counts = dict(
        db.execute(
            f"""SELECT l.slug, COUNT(*) FROM ({sql}) a
                JOIN lists l ON l.id = a.list_id GROUP BY l.slug""",
            params,
        ).fetchall()
    )
    return {slug: counts.get(slug, 0) for slug in campaign.lists}


def snapshot_audience(db: Database, campaign: Campaign, table: str) -> None:
    """The campaign's audience as it is now, in one read, into the temporary table
    ``table`` of this connection: (id, email, key, list_id), in subscriber order.

    Nothing of the database is written (a temporary table is the connection's
    own), so it takes no write lock however large the audience."""
    sql, params = _audience_sql(campaign, db)
    db.execute(f"DROP TABLE IF EXISTS temp.{table}")
    db.execute(f"CREATE TEMP TABLE {table} AS SELECT id, email, key, list_id FROM ({sql})", params)


def iter_audience(db: Database, campaign: Campaign):
    """(subscriber dict, list slug, list title) for each recipient, streamed."""
    sql, params = _audience_sql(campaign, db)
    cursor = db.execute(
        f"""SELECT {SUBSCRIBER_COLUMNS}, l.slug, l.title
            FROM ({sql}) a JOIN subscribers s ON s.id = a.id JOIN lists l ON l.id = a.list_id
            ORDER BY s.id""",
        params,
    )
    for *subscriber, slug, title in cursor:
        yield subscriber_dict(*subscriber), slug, title


def without_holdout(campaign: Campaign, audience: Iterable, held: Counter) -> Iterator:
    """The recipients of ``audience`` (``iter_audience``) the campaign will mail: its
    held-out group (by the outbox's rule, ``held_out``) left out and counted in
    ``held["held_out"]``."""
    for item in audience:
        if held_out(campaign.slug, item[0]["key"], campaign.holdout):
            held["held_out"] += 1
        else:
            yield item


def recorded_slugs(db: Database) -> list[str]:
    """The campaigns the database has a row for (sent, sending, missed...); the
    steps of sequences are not among them (`sequences show` lists those)."""
    return [
        r[0]
        for r in db.execute("SELECT slug FROM campaigns WHERE sequence_id IS NULL ORDER BY slug")
    ]


def campaign_row(db: Database, slug: str) -> dict | None:
    check_campaign_slug(slug)
    row = db.execute(
        "SELECT id, slug, offer, state, started, finished, holdout, attribution_days, coupon, "
        "send_at FROM campaigns WHERE slug = ?",
        [slug],
    ).fetchone()
    keys = ("id", "slug", "offer", "state", "started", "finished", "holdout")
    keys += ("attribution_days", "coupon", "send_at")
    return dict(zip(keys, row, strict=True)) if row else None


def _stored_send_at(campaign: Campaign) -> str | None:
    return campaign.send_at.astimezone(UTC).isoformat() if campaign.send_at else None


def register(db: Database, campaign: Campaign, *, digest: str, coupon: str | None) -> int:
    """The campaign's row (created when first seen); its id."""
    row = campaign_row(db, campaign.slug)
    if row is not None:
        return row["id"]
    cid = db.execute(
        """INSERT INTO campaigns (slug, offer, lists, exclude_lists, template_digest, state,
           send_at, holdout, attribution_days, coupon, created)
           VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?)""",
        [
            campaign.slug,
            campaign.offer,
            json.dumps(campaign.lists),
            json.dumps(campaign.exclude_lists),
            digest,
            _stored_send_at(campaign),
            campaign.holdout,
            campaign.attribution_days,
            coupon,
            now(),
        ],
    ).lastrowid
    if campaign.variants:
        db.execute(
            "UPDATE campaigns SET variants = ? WHERE id = ?", [json.dumps(campaign.variants), cid]
        )
    return cid


def set_state(db: Database, campaign_id: int, state: str) -> None:
    stamp = now()
    extra = ""
    if state == "sending":
        extra = ", started = coalesce(started, :stamp)"
    elif state in ("done", "missed", "testing"):
        extra = ", finished = :stamp"
    db.execute(
        f"UPDATE campaigns SET state = :state{extra} WHERE id = :id",
        {"state": state, "stamp": stamp, "id": campaign_id},
    )


def rescheduled(row: dict | None, campaign: Campaign) -> bool:
    """A missed campaign whose ``send_at`` has been edited since: it has a new chance."""
    return (
        row is not None and row["state"] == "missed" and row["send_at"] != _stored_send_at(campaign)
    )


def reschedule(db: Database, campaign_id: int, campaign: Campaign) -> None:
    """Make a missed campaign scheduled again, at the ``send_at`` its file now says."""
    db.execute(
        "UPDATE campaigns SET state = 'scheduled', send_at = ?, finished = NULL "
        "WHERE id = ? AND state = 'missed'",
        [_stored_send_at(campaign), campaign_id],
    )


def current_state(row: dict | None, campaign: Campaign, at: datetime | None = None) -> str:
    """What to show for a campaign: its row's state once it went somewhere, else its schedule."""
    if row is None or row["state"] == "scheduled" or rescheduled(row, campaign):
        return due_status(campaign, at)
    return row["state"]


def due_status(campaign: Campaign, at: datetime | None = None) -> str:
    """'manual' (no send_at), 'waiting', 'due' or 'missed' at time ``at``."""
    if campaign.send_at is None:
        return "manual"
    at = at or clock()
    if at < campaign.send_at:
        return "waiting"
    if campaign.max_late is not None and at - campaign.send_at > campaign.max_late:
        return "missed"
    return "due"
