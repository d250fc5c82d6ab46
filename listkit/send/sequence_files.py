"""Sequence files: ``sequences/<slug>.toml``, checked like campaigns, and their rows.

A sequence sends its steps to each reader from that reader's own moment::

    trigger = "joined:blog"        # or bought:anything | bought:product:NAME | bought:offer:SLUG
    imported = "join"              # joined: only; an import onto the list enrols too
    holdout = 0.1                  # share of readers kept back to measure the lift
    attribution_days = 7
    exit = ["bought:offer:launch"] # purchases that end the sequence for a reader

    [[steps]]
    name = "download"              # a step is known by its name
    offer = "welcome-download"     # an offer folder (a useful message, or a sale)
    after = "0m"                   # after the trigger (the first), after the previous step
    sells = false                  # a useful message; a step sells unless it says so

``sync`` records a sequence in the database (``audience.enrollments`` has the
data model): its row, created the first time listkit reads the file (only
triggers from then on enrol), and one ``campaigns`` row per step (slug
``<sequence>/<step>``), so a step's messages are deliveries like a
campaign's.

The rule for editing a live sequence: steps are known by name and keep the
order they first had. A step removed from the file is skipped (a reader
whose next step it was goes on to the one after it); a step added applies to
every reader who has not passed its place (the readers who finished are
brought back for a step added at the end); a changed ``after`` moves the due
time of readers waiting for that step. Messages already in the outbox go out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from listkit.audience.audiences import PURCHASES, Resolver
from listkit.audience.enrollments import MATCHES
from listkit.audience.lists import check_slug, get_list
from listkit.db import immediate, seconds
from listkit.errors import InputError, ListkitError, NotFound
from listkit.mail.offers import Offer, load_offer
from listkit.send.campaigns import (
    MAX_ATTRIBUTION_DAYS,
    campaign_slugs,
    check_sells,
    format_duration,
    parse_duration,
    read_toml_file,
    sells,
)
from listkit.send.outbox import held_and_skipped, retry
from listkit.vocab import ACTIVE, FINISHED

FIELDS = {"trigger", "imported", "holdout", "attribution_days", "exit", "steps"}
STEP_FIELDS = {"name", "offer", "after", "sells"}
BOUGHT = ("anything", "product:", "offer:")
MAX_AFTER = timedelta(days=366)
MAX_STEPS = 50


@dataclass(frozen=True)
class Step:
    name: str
    offer: str
    after: timedelta
    sells: bool
    product: str = ""
    coupon: str | None = None  # the offer's code for everyone (attribution by coupon)


@dataclass(frozen=True)
class Sequence:
    slug: str
    trigger: str
    kind: str  # joined | bought
    target: str  # a list's slug, or anything | product:NAME | offer:SLUG
    steps: tuple[Step, ...]
    exits: tuple[str, ...] = ()  # purchase targets (without "bought:")
    holdout: float = 0.0
    attribution_days: int = 7
    imported: str = "ignore"  # join | ignore
    path: Path = field(default=Path("."), compare=False)

    def step_slug(self, step: str) -> str:
        """The campaign row of a step: ``<sequence>/<step>``."""
        return f"{self.slug}/{step}"

    @property
    def selling(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.sells)


def sequence_slugs(sequences_dir: Path) -> list[str]:
    return campaign_slugs(sequences_dir)


def _purchase(value: object, where: str) -> str:
    """``bought:anything|product:NAME|offer:SLUG`` -> the target after ``bought:``."""
    if isinstance(value, str) and value.startswith("bought:"):
        target = value[len("bought:") :]
        if target == "anything" or (
            target.startswith(BOUGHT[1:]) and target.split(":", 1)[1].strip()
        ):
            if target.startswith("offer:"):
                check_slug(target[len("offer:") :], "offer")
            return target
    raise InputError(
        f"{where} {value!r} is not a purchase: write bought:anything, bought:product:NAME "
        "or bought:offer:SLUG"
    )


def load_sequence(sequences_dir: Path, offers_dir: Path, slug: str) -> Sequence:
    """Read and check ``sequences/<slug>.toml``; errors name the file, the step and the field."""
    path, data = read_toml_file(sequences_dir, slug, "sequence", FIELDS)
    trigger = data.get("trigger")
    if not isinstance(trigger, str):
        raise InputError(
            f"{path}: missing field trigger: joined:LIST, or bought:anything, "
            "bought:product:NAME, bought:offer:SLUG"
        )
    if trigger.startswith("joined:"):
        kind, target = "joined", trigger[len("joined:") :]
        try:
            check_slug(target, "list")
        except InputError as e:
            raise InputError(f"{path}: field trigger: {e}") from None
    elif trigger.startswith("bought:"):
        kind, target = "bought", _purchase(trigger, f"{path}: field trigger")
    else:
        raise InputError(
            f"{path}: field trigger {trigger!r} is not joined:LIST, bought:anything, "
            "bought:product:NAME or bought:offer:SLUG"
        )
    imported = data.get("imported", "ignore")
    if imported not in ("join", "ignore"):
        raise InputError(f"{path}: field imported must be 'join' or 'ignore' (the default)")
    if imported == "join" and kind != "joined":
        raise InputError(f"{path}: field imported is for a joined: trigger")
    holdout = data.get("holdout", 0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 1:
        raise InputError(f"{path}: field holdout {holdout!r} must be a fraction from 0 to below 1")
    days = data.get("attribution_days", 7)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_ATTRIBUTION_DAYS:
        raise InputError(
            f"{path}: field attribution_days must be from 0 to {MAX_ATTRIBUTION_DAYS} days"
        )
    exits = data.get("exit", [])
    if not isinstance(exits, list):
        raise InputError(f"{path}: field exit must be a list, e.g. exit = ['bought:anything']")
    exits = tuple(_purchase(e, f"{path}: field exit") for e in exits)
    steps = _steps(data.get("steps"), path, offers_dir)
    return Sequence(
        slug=slug,
        trigger=trigger,
        kind=kind,
        target=target,
        steps=steps,
        exits=exits,
        holdout=float(holdout),
        attribution_days=days,
        imported=imported,
        path=path,
    )


def _steps(raw: object, path: Path, offers_dir: Path) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: a sequence needs [[steps]], each with name, offer and after")
    if len(raw) > MAX_STEPS:
        raise InputError(f"{path}: at most {MAX_STEPS} steps")
    steps: list[Step] = []
    for i, item in enumerate(raw, 1):
        where = f"{path}: step {i}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: write each step as a [[steps]] table")
        unknown = sorted(set(item) - STEP_FIELDS)
        if unknown:
            raise InputError(
                f"{where}: unknown field {', '.join(unknown)} "
                f"(known: {', '.join(sorted(STEP_FIELDS))})"
            )
        for key in ("name", "offer", "after"):
            if not isinstance(item.get(key), str):
                raise InputError(f"{where}: missing field {key}")
        try:
            name = check_slug(item["name"], "step")
        except InputError as e:
            raise InputError(f"{where}: field name: {e}") from None
        where = f"{path}: step {i} ({name})"
        if any(s.name == name for s in steps):
            raise InputError(f"{where}: another step has the name {name!r}; names must differ")
        check_sells(item, where)
        after = parse_duration(item["after"], f"{where}: field after", MAX_AFTER)
        try:
            offer: Offer = load_offer(offers_dir, item["offer"])
        except ListkitError as e:
            raise InputError(f"{where}: field offer: {e}") from None
        steps.append(Step(name, offer.slug, after, sells(item), offer.product, offer.coupon))
    return tuple(steps)


def _merged(old: list[dict], seq: Sequence) -> list[dict]:
    """Every step the sequence ever had, in the order each first had: the file's
    steps as they are now, the others flagged ``removed``. An added step goes
    after the nearest step before it in the file that is already known."""
    now_steps = {
        s.name: {
            "name": s.name,
            "offer": s.offer,
            "after": int(s.after.total_seconds()),
            "sells": s.sells,
            "product": s.product,
            "removed": False,
        }
        for s in seq.steps
    }
    merged = [now_steps.get(o["name"], {**o, "removed": True}) for o in old]
    names = [m["name"] for m in merged]
    anchor = -1
    for s in seq.steps:
        if s.name in names:
            anchor = names.index(s.name)
            continue
        anchor += 1
        merged.insert(anchor, now_steps[s.name])
        names.insert(anchor, s.name)
    return merged


def next_step(steps: list[dict], passed: str | None) -> dict | None:
    """The step a reader who last passed ``passed`` (None: nothing yet) gets next."""
    names = [s["name"] for s in steps]
    start = names.index(passed) + 1 if passed in names else 0
    return next((s for s in steps[start:] if not s["removed"]), None)


def sync(db: Database, seq: Sequence, *, at: datetime | None = None) -> int:
    """Record the sequence (created when first read, ``at``) and its steps'
    campaign rows; apply an edit to the readers in it. The sequence's id.
    Inside the caller's transaction."""
    stamp = seconds(at)
    list_id = get_list(db, seq.target)["id"] if seq.kind == "joined" else None
    row = db.execute(
        """SELECT id, steps, trigger, kind, target, list_id, imported, holdout, exits, steps,
           first_step, first_after FROM sequences WHERE slug = ?""",
        [seq.slug],
    ).fetchone()
    old = json.loads(row[1]) if row else []
    steps = _merged(old, seq)
    first = next_step(steps, None)
    values = [
        seq.trigger,
        seq.kind,
        seq.target,
        list_id,
        seq.imported,
        seq.holdout,
        json.dumps(list(seq.exits)),
        json.dumps(steps),
        first["name"] if first else None,
        first["after"] if first else None,
    ]
    if row is None:
        sid = db.execute(
            """INSERT INTO sequences (trigger, kind, target, list_id, imported, holdout, exits,
               steps, first_step, first_after, slug, created) VALUES
               (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [*values, seq.slug, stamp],
        ).lastrowid
    elif list(row[2:]) == values and _campaigns_match(db, row[0], seq):
        return row[0]  # read again unchanged (every tick): nothing to write
    else:
        sid = row[0]
        db.execute(
            """UPDATE sequences SET trigger = ?, kind = ?, target = ?, list_id = ?, imported = ?,
               holdout = ?, exits = ?, steps = ?, first_step = ?, first_after = ?, updated = ?
               WHERE id = ?""",
            [*values, stamp, sid],
        )
        if steps != old:
            _replace(db, sid, steps)
    _step_campaigns(db, sid, seq)
    return sid


def _replace(db: Database, sequence_id: int, steps: list[dict]) -> None:
    """After an edit: each waiting (or finished) reader's next step and its due time,
    from the last step they passed."""
    stamp = seconds()
    passed = [
        r[0]
        for r in db.execute(
            f"""SELECT DISTINCT step FROM enrollments WHERE sequence_id = ?
                AND state IN ('{ACTIVE}', '{FINISHED}')""",
            [sequence_id],
        )
    ]
    for name in passed:
        nxt = next_step(steps, name)
        db.execute(
            f"""UPDATE enrollments SET state = ?, next_step = ?,
                   next_due = CASE WHEN ? IS NULL THEN NULL
                                   ELSE coalesce(step_at, trigger_at) + ? END, updated = ?
                WHERE sequence_id = ? AND state IN ('{ACTIVE}', '{FINISHED}') AND step IS ?""",
            [
                ACTIVE if nxt else FINISHED,
                nxt["name"] if nxt else None,
                nxt and nxt["name"],
                nxt["after"] if nxt else 0,
                stamp,
                sequence_id,
                name,
            ],
        )


def _campaigns_match(db: Database, sequence_id: int, seq: Sequence) -> bool:
    """Whether the steps' campaign rows say what the file (and the offers) say."""
    stored = set(
        db.execute(
            "SELECT step, offer, attribution_days, coupon FROM campaigns WHERE sequence_id = ?",
            [sequence_id],
        ).fetchall()
    )
    return {(s.name, s.offer, seq.attribution_days, s.coupon) for s in seq.steps} <= stored


def _step_campaigns(db: Database, sequence_id: int, seq: Sequence) -> None:
    """One campaigns row per step (its offer, the offer's coupon and the attribution
    window kept up to date: a sale with the coupon is attributed to the step as to a
    campaign)."""
    created = datetime.now(UTC).isoformat()
    for step in seq.steps:
        slug = seq.step_slug(step.name)
        db.execute(
            """INSERT INTO campaigns (slug, offer, lists, state, holdout, attribution_days,
               coupon, created, sequence_id, step)
               VALUES (?, ?, '[]', 'scheduled', 0, ?, ?, ?, ?, ?)
               ON CONFLICT (slug) DO UPDATE SET offer = excluded.offer,
               attribution_days = excluded.attribution_days, coupon = excluded.coupon""",
            [slug, step.offer, seq.attribution_days, step.coupon, created, sequence_id, step.name],
        )


@dataclass
class Loaded:
    """The sequences of a workspace as read now: those that load, and the errors of
    those that do not (one bad file never stops the others)."""

    sequences: dict[str, tuple[int, Sequence]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def sync_all(
    db: Database, sequences_dir: Path, offers_dir: Path, *, at: datetime | None = None
) -> Loaded:
    """Read every sequence file and record it (``sync``), each in its own transaction."""
    loaded = Loaded()
    for slug in sequence_slugs(sequences_dir):
        try:
            seq = load_sequence(sequences_dir, offers_dir, slug)
            with immediate(db):
                loaded.sequences[slug] = (sync(db, seq, at=at), seq)
        except ListkitError as e:
            loaded.errors[slug] = str(e)
    return loaded


def set_paused(db: Database, slug: str, paused: bool) -> bool:
    """Pause (or resume) a recorded sequence; whether its state changed."""
    check_slug(slug, "sequence")
    with immediate(db):
        row = db.execute("SELECT state FROM sequences WHERE slug = ?", [slug]).fetchone()
        if row is None:
            raise NotFound(
                f"no sequence {slug!r} is recorded yet: `listkit sequences check {slug}` records it"
            )
        state = "paused" if paused else "live"
        db.execute(
            "UPDATE sequences SET state = ?, updated = ? WHERE slug = ?", [state, seconds(), slug]
        )
    return row[0] != state


COUNTED = (ACTIVE, FINISHED, "exited", "held_out")


def overview(db: Database, loaded: Loaded) -> list[dict]:
    """One row per sequence (recorded, or a file in error): trigger, state, steps and
    how many readers are active, finished, exited and held out."""
    rows = []
    for slug, sid, trigger, state, steps in db.execute(
        "SELECT slug, id, trigger, state, steps FROM sequences ORDER BY slug"
    ).fetchall():
        found = dict(
            db.execute(
                "SELECT state, COUNT(*) FROM enrollments WHERE sequence_id = ? GROUP BY state",
                [sid],
            ).fetchall()
        )
        counts = {s: found.get(s, 0) for s in COUNTED}
        if slug in loaded.errors:
            state = f"ERROR: {loaded.errors[slug]}"
        elif slug not in loaded.sequences:
            state = "no file"
        live = [s["name"] for s in json.loads(steps) if not s["removed"]]
        rows.append(
            {
                "sequence": slug,
                "trigger": trigger,
                "state": state,
                "steps": len(live),
                "enrolled": sum(counts.values()),
                **counts,
            }
        )
    for slug, error in loaded.errors.items():
        if not any(r["sequence"] == slug for r in rows):
            rows.append({"sequence": slug, "state": f"ERROR: {error}"})
    return sorted(rows, key=lambda r: r["sequence"])


def step_report(db: Database, slug: str) -> list[dict]:
    """Per step of a recorded sequence: its offer, delay, whether it sells, the readers
    waiting for it, its messages by state (sent, skipped, failed, unknown...), and
    why they are held back or were skipped (``outbox.held_and_skipped``)."""
    check_slug(slug, "sequence")
    row = db.execute("SELECT id, steps FROM sequences WHERE slug = ?", [slug]).fetchone()
    if row is None:
        raise NotFound(
            f"no sequence {slug!r} is recorded yet: `listkit sequences check {slug}` records it"
        )
    sid, steps = row
    waiting = dict(
        db.execute(
            f"""SELECT next_step, COUNT(*) FROM enrollments WHERE sequence_id = ?
                AND state = '{ACTIVE}' GROUP BY next_step""",
            [sid],
        ).fetchall()
    )
    ids = dict(db.execute("SELECT step, id FROM campaigns WHERE sequence_id = ?", [sid]))
    out = []
    for step in json.loads(steps):
        found = dict(
            db.execute(
                """SELECT d.state, COUNT(*) FROM deliveries d JOIN campaigns c
                   ON c.id = d.campaign_id WHERE c.sequence_id = ? AND c.step = ?
                   GROUP BY d.state""",
                [sid, step["name"]],
            ).fetchall()
        )
        cid = ids.get(step["name"])
        waits = held_and_skipped(db, cid) if cid else {"held_back": [], "skipped": {}}
        out.append(
            {
                "step": step["name"],
                "offer": step["offer"],
                "after": format_duration(timedelta(seconds=step["after"])),
                "sells": step["sells"],
                "removed": step["removed"],
                "waiting": waiting.get(step["name"], 0),
                "messages": found,
                **waits,
            }
        )
    return out


def enrol_existing(
    db: Database, seq: Sequence, sequence_id: int, rules, offers_dir: Path, *, apply: bool
) -> int:
    """`sequences enroll`: the readers the trigger's audience holds now (the list's
    active members, or the active members who bought what the trigger names) and
    the rules select, who are in no state of this sequence yet; enrolled as of now
    when ``apply``. Their number."""
    cond, params = Resolver(db, offers_dir=offers_dir).conditions(rules)
    if seq.kind == "joined":
        who = """s.id IN (SELECT subscriber_id FROM memberships
                          WHERE list_id = ? AND status = 'active')"""
        params = [get_list(db, seq.target)["id"], *params]
    else:
        who = f"""s.id IN (SELECT b.sid FROM ({PURCHASES}) b
                           WHERE {MATCHES.format(target="?", sale="b")})
                  AND EXISTS (SELECT 1 FROM memberships m WHERE m.subscriber_id = s.id
                              AND m.status = 'active')"""
        params = [seq.target, seq.target, seq.target, *params]
    select = f"""SELECT s.id FROM subscribers s WHERE {who}{cond}
                 AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.key = s.key)
                 AND NOT EXISTS (SELECT 1 FROM enrollments e
                                 WHERE e.sequence_id = ? AND e.subscriber_id = s.id)"""
    params = [*params, sequence_id]
    if not apply:
        return db.execute(f"SELECT COUNT(*) FROM ({select})", params).fetchone()[0]
    stamp = seconds()
    with immediate(db):
        return db.execute(
            f"""INSERT OR IGNORE INTO enrollments (sequence_id, subscriber_id, list_id, state,
                   trigger_at, trigger_ref, next_step, next_due, created)
                SELECT q.id, s.id,
                       coalesce(q.list_id, (SELECT min(m.list_id) FROM memberships m
                                WHERE m.subscriber_id = s.id AND m.status = 'active')),
                       '{ACTIVE}', ?, 'enroll', q.first_step, ? + q.first_after, ?
                FROM sequences q, subscribers s
                WHERE q.id = ? AND s.id IN ({select})""",
            [stamp, stamp, stamp, sequence_id, *params],
        ).rowcount


def retry_steps(db: Database, slug: str, which: str) -> int:
    """Put a sequence's unknown, failed or deferred step messages back for the next
    `send --due` (``outbox.retry`` on each step's campaign row); how many."""
    check_slug(slug, "sequence")
    row = db.execute("SELECT id FROM sequences WHERE slug = ?", [slug]).fetchone()
    if row is None:
        raise NotFound(f"no sequence {slug!r} is recorded yet")
    return sum(
        retry(db, cid, which)
        for (cid,) in db.execute(
            "SELECT id FROM campaigns WHERE sequence_id = ? ORDER BY id", [row[0]]
        ).fetchall()
    )
