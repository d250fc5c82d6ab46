"""The one place that opens the database: pragmas, schema migrations, transactions.

Every connection is configured the same way: WAL, ``synchronous=FULL`` (a
commit is durable when it returns), foreign keys on, a busy timeout so that two
processes wait for each other instead of failing. Schema changes are
sqlite-utils ``Migrations`` steps; never edit a shipped step, add one.

Times are stored as ISO 8601 UTC text (``2026-11-22T11:21:16.123456+00:00``),
money as integer minor units with a currency code.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from listkit.errors import ListkitError
from listkit.files import create_private

BUSY_TIMEOUT_MS = 30_000
# Waiting for the write lock (``begin_immediate``): the first and the longest
# sleep between tries, in seconds.
LOCK_POLL_FIRST = 0.0002
LOCK_POLL_MAX = 0.002

migrations = Migrations("listkit")


class Clock:
    """The time listkit takes as now: every stored time (``now``) and every "is it
    due yet" of sending reads it. It is the system's clock; a test moves it
    forward (``offset``) to live through days in seconds."""

    offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


clock = Clock()


def now() -> str:
    """The current time as stored in the database."""
    return clock().isoformat()


def open_db(path: Path | str, *, create: bool = True) -> Database:
    """Open (and if needed create and migrate) the listkit database at ``path``."""
    path = Path(path)
    if not create and not path.exists():
        raise ListkitError(f"no database at {path}: run `listkit init` in the workspace first")
    if not path.parent.is_dir():
        raise ListkitError(f"cannot create database {path}: folder {path.parent} does not exist")
    conn = None
    try:
        # Personal data: the file is created private, and SQLite gives its WAL
        # and SHM files the database's mode.
        create_private(path)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        # No sqlite-utils plugins: listkit uses none, finding them reads every installed
        # package's metadata on each command's start, and a plugin's code would run on
        # a database of personal data.
        db = Database(conn, execute_plugins=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _refuse_newer(db, path)
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
        if "unable to open" in str(e) and path.is_file() and _read_only_mount(path.parent):
            return _open_read_only(path)
        raise ListkitError(describe_db_error(path, e)) from None
    except OSError as e:
        raise ListkitError(describe_os_error(e)) from None
    except ListkitError:
        if conn is not None:
            conn.close()
        raise
    return db


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _open_read_only(path: Path) -> Database:
    """The database on a read-only file system (a backup, a snapshot): for reading.

    WAL mode needs to write its -shm file beside the database, so SQLite
    cannot open it normally there. Nothing can change it through a read-only
    mount, so it is opened as immutable (or read-only, when a -wal file left
    there holds part of it). Commands that only read work; a write fails
    with the error that says why.
    """
    flag = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?{flag}", uri=True, check_same_thread=False)
        db = Database(conn, execute_plugins=False)
        _refuse_newer(db, path)
        if migrations.pending(db):
            conn.close()
            raise ListkitError(
                f"{path} is on a read-only file system and needs a schema update this "
                "listkit makes on first use: open it once where it can be written"
            )
    except sqlite3.DatabaseError as e:
        raise ListkitError(describe_db_error(path, e)) from None
    return db


def _refuse_newer(db: Database, path: Path) -> None:
    """A database another (newer) listkit migrated: its schema is not ours to write."""
    known = {m.name for m in migrations._migrations}  # sqlite-utils has no public list
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise ListkitError(
            f"{path} was written by a newer listkit (schema steps this one does not know: "
            f"{', '.join(unknown)}): upgrade listkit to use it; nothing was changed"
        )


def describe_db_error(path: Path | str, e: sqlite3.Error) -> str:
    """One line for a database failure: which database, what happened, what to do."""
    text = str(e)
    folder = Path(path).parent
    if "locked" in text or "busy" in text:
        return (
            f"the database {path} is locked by another program (listkit waited "
            f"{BUSY_TIMEOUT_MS / 1000:g} s): run the command again when it has finished; "
            "the change that needed the lock was not made"
        )
    if "full" in text:
        return (
            f"the database {path} cannot grow: the disk is full; free some space and run "
            "the command again (the change that needed the space was not made)"
        )
    if "readonly" in text or "unable to open" in text or "read-only" in text:
        if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
            return (
                f"cannot write the database {path}: the folder {folder} or the file is not "
                "writable, and SQLite (in WAL mode) needs to write the database and its -wal "
                "and -shm files beside it; run listkit as a user who may write there, or "
                "work on a copy of the workspace"
            )
        return f"cannot open the database {path}: {text}"
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a listkit database, or it is damaged ({text})"
    return f"database {path}: {text}"


# What a full or read-only disk, or missing permissions, look like as OSError.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run the command again",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def describe_os_error(e: OSError) -> str:
    """One line for a file listkit cannot use: which file and why."""
    what = DISK_ERRNOS.get(e.errno or 0, e.strerror or str(e))
    where = e.filename if e.filename is not None else "a file"
    return f"{where}: {what}"


def begin_immediate(
    conn: sqlite3.Connection,
    timeout: float | None = None,
    *,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """``BEGIN IMMEDIATE``, waiting up to ``timeout`` seconds (default: the busy
    timeout) for another writer.

    SQLite's own busy handler sleeps in growing steps (1, 2, 5, 10, 15, 20, 25,
    25, 25, 50, 50, 100 ms): a writer that holds the lock for a few
    milliseconds at a time with short gaps between (``listkit serve`` under
    load, a send's group commits) keeps the other waiting tens of milliseconds
    for a lock that was free most of that time. Here the lock is tried again
    after at most ``LOCK_POLL_MAX`` seconds. When the time is up, SQLite's
    "database is locked" error is raised as it would have been.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        if timeout is None:
            timeout = BUSY_TIMEOUT_MS / 1000
        deadline = time.monotonic() + timeout
        delay = LOCK_POLL_FIRST
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if time.monotonic() >= deadline:
                    raise
            sleep(delay)
            delay = min(delay * 2, LOCK_POLL_MAX)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


@contextlib.contextmanager
def immediate(db: Database) -> Iterator[Database]:
    """A write transaction that takes the write lock up front (``BEGIN IMMEDIATE``).

    Use it wherever a transaction reads and then writes: ``db.atomic()`` issues
    a plain ``BEGIN``, and in WAL mode a deferred transaction whose snapshot
    went stale (another process committed meanwhile) fails at its first write
    with "database is locked", without waiting.
    """
    conn = db.conn
    if conn.in_transaction:
        raise RuntimeError("immediate() cannot be nested inside another transaction")
    begin_immediate(conn)
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


@migrations()
def m001_lists_and_subscribers(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE lists (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL UNIQUE,
            title TEXT,
            created TEXT NOT NULL
        )"""
    )
    # key: the case-folded address, the identity of a subscriber everywhere.
    db.execute(
        """
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,
            key TEXT NOT NULL UNIQUE,
            name TEXT,
            fields TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            updated TEXT,
            source TEXT
        )"""
    )
    # status: active | unsubscribed | bounced | complained
    db.execute(
        """
        CREATE TABLE memberships (
            list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
            status TEXT NOT NULL DEFAULT 'active',
            created TEXT NOT NULL,
            updated TEXT,
            consent_at TEXT,
            consent_method TEXT,
            consent_source TEXT,
            consent_ip TEXT,
            confirmed_at TEXT,
            confirm_ip TEXT,
            status_at TEXT,
            status_reason TEXT,
            PRIMARY KEY (list_id, subscriber_id)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX memberships_subscriber ON memberships(subscriber_id)")
    # reason: unsubscribed | hard_bounce | complaint | manual | import
    db.execute(
        """
        CREATE TABLE suppressions (
            key TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            reason TEXT NOT NULL,
            created TEXT NOT NULL,
            campaign_id INTEGER,
            source TEXT,
            note TEXT
        )"""
    )


@migrations()
def m002_campaigns_and_deliveries(db: Database) -> None:
    # state: scheduled | sending | done | missed
    db.execute(
        """
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL UNIQUE,
            offer TEXT NOT NULL,
            lists TEXT NOT NULL DEFAULT '[]',
            exclude_lists TEXT NOT NULL DEFAULT '[]',
            template_digest TEXT,
            state TEXT NOT NULL DEFAULT 'scheduled',
            send_at TEXT,
            holdout REAL NOT NULL DEFAULT 0,
            attribution_days INTEGER NOT NULL DEFAULT 7,
            coupon TEXT,
            created TEXT NOT NULL,
            started TEXT,
            finished TEXT
        )"""
    )
    # The outbox: one row per campaign x subscriber.
    # state: pending | sending | sent | deferred | failed | unknown | held_out
    # phase (while sending): claimed | data (DATA may have reached the server)
    db.execute(
        """
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
            list_id INTEGER NOT NULL REFERENCES lists(id),
            email TEXT NOT NULL,
            token TEXT NOT NULL UNIQUE,
            message_id TEXT,
            coupon TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            phase TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT,
            last_code INTEGER,
            last_reply TEXT,
            claimed_by TEXT,
            created TEXT NOT NULL,
            updated TEXT,
            sent_at TEXT,
            UNIQUE (campaign_id, subscriber_id)
        )"""
    )
    db.execute("CREATE INDEX deliveries_state ON deliveries(campaign_id, state)")
    db.execute("CREATE INDEX deliveries_subscriber ON deliveries(subscriber_id)")
    db.execute("CREATE INDEX deliveries_list ON deliveries(list_id, state)")


@migrations()
def m003_sales_and_events(db: Database) -> None:
    # One row per order; amount and refunded in minor units of `currency`.
    # method: token | coupon | email | none
    db.execute(
        """
        CREATE TABLE sales (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            order_id TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'paid',
            amount INTEGER NOT NULL,
            refunded INTEGER NOT NULL DEFAULT 0,
            currency TEXT NOT NULL,
            at TEXT NOT NULL,
            email TEXT,
            email_key TEXT,
            coupon TEXT,
            token TEXT,
            utm_campaign TEXT,
            utm_content TEXT,
            product TEXT,
            raw TEXT,
            delivery_id INTEGER REFERENCES deliveries(id) ON DELETE SET NULL,
            campaign_id INTEGER REFERENCES campaigns(id) ON DELETE SET NULL,
            list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL,
            offer TEXT,
            method TEXT NOT NULL DEFAULT 'none',
            imported TEXT NOT NULL,
            updated TEXT,
            UNIQUE (source, order_id)
        )"""
    )
    db.execute("CREATE INDEX sales_at ON sales(at)")
    db.execute("CREATE INDEX sales_campaign ON sales(campaign_id)")
    # kind: click | unsubscribe | complaint
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER REFERENCES deliveries(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            url TEXT
        )"""
    )
    db.execute("CREATE INDEX events_delivery ON events(delivery_id, kind)")


@migrations()
def m004_report_indexes(db: Database) -> None:
    # Reports aggregate sales per list, campaign and buyer without scanning.
    db.execute("CREATE INDEX sales_email ON sales(email_key, at)")
    db.execute("CREATE INDEX sales_list ON sales(list_id, currency)")
    db.execute("CREATE INDEX deliveries_token_coupon ON deliveries(coupon)")
    db.execute("CREATE INDEX suppressions_campaign ON suppressions(campaign_id, reason)")
    db.execute("CREATE INDEX memberships_status ON memberships(list_id, status)")


@migrations()
def m005_sales_drop_coupon_index(db: Database) -> None:
    # Attribution finds a per-recipient coupon through the token index (the code
    # carries the token's first characters), so this index only cost every
    # delivery insert.
    db.execute("DROP INDEX IF EXISTS deliveries_token_coupon")


@migrations()
def m008_rekey_international_domains(db: Database) -> None:
    """Keys follow ``addresses.email_key``: an international domain in its ASCII form.

    Only keys with a character outside ASCII can change. Two subscribers whose
    keys become one are one person: the older row (lowest id) keeps the key;
    the other's memberships move to it (on a list both were on, the least
    mailable status wins: unsubscribed, bounced or complained over pending over
    active), and so do its deliveries, except in a campaign that mailed both
    (those stay with the other row, as history). The other row keeps its
    address and no membership, so it is never mailed again, under the key
    ``<old key>#merged-into-<id>``. Of two suppressions that become one, the
    earliest is kept.
    """
    from listkit.addresses import email_key  # lazy: email-validator, for this step alone

    conn = db.conn
    not_ascii = "*[^\x01-\x7f]*"
    for sid, key in conn.execute(
        "SELECT id, key FROM subscribers WHERE key GLOB ? ORDER BY id", [not_ascii]
    ).fetchall():
        new = email_key(key)
        if new == key:
            continue
        holder = conn.execute("SELECT id, key FROM subscribers WHERE key = ?", [new]).fetchone()
        if holder is None:
            conn.execute("UPDATE subscribers SET key = ? WHERE id = ?", [new, sid])
            continue
        keep, gone, gone_key = (holder[0], sid, key) if holder[0] < sid else (sid, *holder)
        conn.execute(
            "UPDATE subscribers SET key = ? WHERE id = ?", [f"{gone_key}#merged-into-{keep}", gone]
        )
        conn.execute("UPDATE subscribers SET key = ? WHERE id = ?", [new, keep])
        _merge_memberships(conn, keep, gone)
        conn.execute(
            """UPDATE deliveries SET subscriber_id = ? WHERE subscriber_id = ? AND campaign_id
               NOT IN (SELECT campaign_id FROM deliveries WHERE subscriber_id = ?)""",
            [keep, gone, keep],
        )
    for key, created in conn.execute(
        "SELECT key, created FROM suppressions WHERE key GLOB ? ORDER BY created, key", [not_ascii]
    ).fetchall():
        new = email_key(key)
        if new == key:
            continue
        other = conn.execute("SELECT created FROM suppressions WHERE key = ?", [new]).fetchone()
        if other is not None and other[0] <= created:
            conn.execute("DELETE FROM suppressions WHERE key = ?", [key])
            continue
        conn.execute("DELETE FROM suppressions WHERE key = ?", [new])
        conn.execute("UPDATE suppressions SET key = ? WHERE key = ?", [new, key])
    for sale_id, key in conn.execute(
        "SELECT id, email_key FROM sales WHERE email_key GLOB ?", [not_ascii]
    ).fetchall():
        conn.execute("UPDATE sales SET email_key = ? WHERE id = ?", [email_key(key), sale_id])


def _merge_memberships(conn: sqlite3.Connection, keep: int, gone: int) -> None:
    """Move subscriber ``gone``'s memberships to ``keep``; the less mailable status wins."""
    rank = {"active": 0, "pending": 1}
    for list_id, status, status_at, reason in conn.execute(
        """SELECT list_id, status, status_at, status_reason FROM memberships
           WHERE subscriber_id = ?""",
        [gone],
    ).fetchall():
        mine = conn.execute(
            "SELECT status FROM memberships WHERE list_id = ? AND subscriber_id = ?",
            [list_id, keep],
        ).fetchone()
        if mine is None:
            conn.execute(
                "UPDATE memberships SET subscriber_id = ? WHERE list_id = ? AND subscriber_id = ?",
                [keep, list_id, gone],
            )
            continue
        if rank.get(status, 2) > rank.get(mine[0], 2):
            conn.execute(
                """UPDATE memberships SET status = ?, status_at = ?, status_reason = ?
                   WHERE list_id = ? AND subscriber_id = ?""",
                [status, status_at, reason, list_id, keep],
            )
        conn.execute(
            "DELETE FROM memberships WHERE list_id = ? AND subscriber_id = ?", [list_id, gone]
        )


@migrations()
def m009_sale_aliases(db: Database) -> None:
    # Other ids of an order at its source (a Stripe charge or checkout session
    # beside the payment intent that is the order's id), so that the same
    # payment from an export and from a webhook is one sale.
    db.execute(
        """
        CREATE TABLE sale_aliases (
            source TEXT NOT NULL,
            alias TEXT NOT NULL,
            sale_id INTEGER NOT NULL REFERENCES sales(id) ON DELETE CASCADE,
            PRIMARY KEY (source, alias)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX sale_aliases_sale ON sale_aliases(sale_id)")


@migrations()
def m010_delivery_variants(db: Database) -> None:
    # The offer a delivery carries when its campaign tests variants (NULL otherwise,
    # and for held-out rows); sending claims one variant's rows at a time.
    db.execute("ALTER TABLE deliveries ADD COLUMN variant TEXT")
    # With test-then-send: 'test' (the share that tries the variants) or 'rest'
    # (kept as state 'reserved' until the winner is chosen); NULL otherwise.
    db.execute("ALTER TABLE deliveries ADD COLUMN part TEXT")
    # The offers a campaign tests (JSON list), so reports by offer can credit each.
    db.execute("ALTER TABLE campaigns ADD COLUMN variants TEXT")
    # Messages sent per subscriber (silent subscribers) from the index alone; it
    # serves every lookup by subscriber the old one did, at the same insert cost.
    db.execute("DROP INDEX IF EXISTS deliveries_subscriber")
    db.execute("CREATE INDEX deliveries_subscriber_state ON deliveries(subscriber_id, state)")


@migrations()
def m011_signups_clicks_and_event_details(db: Database) -> None:
    # Where an event came from: the evidence for an unsubscribe, a click, a consent.
    db.execute("ALTER TABLE events ADD COLUMN ip TEXT")
    db.execute("ALTER TABLE events ADD COLUMN agent TEXT")
    db.execute("CREATE INDEX events_kind ON events(kind, delivery_id)")
    # A signup through a form (double opt-in): the consent evidence, and the
    # confirmation mailed for it. state: new | mailed | not_mailed | failed | confirmed
    db.execute(
        """
        CREATE TABLE signups (
            id INTEGER PRIMARY KEY,
            nonce TEXT NOT NULL UNIQUE,
            list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
            email TEXT NOT NULL,
            key TEXT NOT NULL,
            name TEXT,
            created TEXT NOT NULL,
            ip TEXT,
            agent TEXT,
            page TEXT,
            form TEXT,
            state TEXT NOT NULL DEFAULT 'new',
            mailed_at TEXT,
            mail_reply TEXT,
            confirmed_at TEXT,
            confirm_ip TEXT,
            confirm_agent TEXT
        )"""
    )
    db.execute("CREATE INDEX signups_key ON signups(key, list_id)")
    # The destinations of tracked links, per campaign, as the offer rendered them.
    db.execute(
        """
        CREATE TABLE links (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            link TEXT NOT NULL,
            url TEXT NOT NULL,
            PRIMARY KEY (campaign_id, link)
        ) WITHOUT ROWID"""
    )


@migrations()
def m013_bounces(db: Database) -> None:
    # Bounce and complaint events (kind 'bounce' | 'complaint') carry the report
    # they came from (report_id: the report's identity and the recipient, so the
    # same report processed twice is recorded once), the address (soft bounces
    # are counted per address) and what the report said (JSON).
    db.execute("ALTER TABLE events ADD COLUMN report_id TEXT")
    db.execute("ALTER TABLE events ADD COLUMN email_key TEXT")
    db.execute("ALTER TABLE events ADD COLUMN detail TEXT")
    db.execute("CREATE UNIQUE INDEX events_report ON events(report_id)")
    db.execute("CREATE INDEX events_email ON events(email_key, kind, at)")
    # Where `bounces fetch` got to in each IMAP mailbox (UIDs are only
    # comparable under one UIDVALIDITY), and the UIDs it understood and has yet
    # to move or delete (committed with what it learned from them).
    db.execute(
        """
        CREATE TABLE mailbox_state (
            mailbox TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL,
            last_uid INTEGER NOT NULL DEFAULT 0,
            done_uids TEXT NOT NULL DEFAULT '[]',
            updated TEXT NOT NULL
        )"""
    )
    # Webhook deliveries already seen (Mailgun tokens, SNS message ids): each once.
    db.execute(
        """
        CREATE TABLE webhook_seen (
            source TEXT NOT NULL,
            id TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (source, id)
        ) WITHOUT ROWID"""
    )


@migrations()
def m014_signup_confirmation_limits(db: Database) -> None:
    # The confirmation mailer reads the signups waiting for its decision, and
    # counts a list's confirmations of the last hour (its budget), on every
    # signup: from indexes, not a scan of every signup the list ever had.
    db.execute("CREATE INDEX signups_waiting ON signups(id) WHERE state = 'new'")
    db.execute("CREATE INDEX signups_list_mailed ON signups(list_id, mailed_at)")


@migrations()
def m019_subscriber_first_and_last_names(db: Database) -> None:
    # First and last names as an export or a person gave them (NULL when only a
    # full name is known: templates then split `name`, see listkit/names.py).
    # `name` stays the full name.
    db.execute("ALTER TABLE subscribers ADD COLUMN first_name TEXT")
    db.execute("ALTER TABLE subscribers ADD COLUMN last_name TEXT")


# m020: the deliveries table as it is from then on. Nothing stored twice that can
# be derived: the address is the subscriber's (``sent_to`` only where the
# message went to another spelling of it), the token and Message-ID come from
# the id and LISTKIT_SECRET (``legacy_token``: the random token a delivery
# made before m020 carries in mail already sent), the personal coupon from the
# token. Times are Unix seconds, in columns named for it. ``last_reply`` is the
# server's answer to a message that did not go (a sent row has its code);
# ``claimed_by`` the run holding a row while it is ``sending``. AUTOINCREMENT:
# an id, and so a token, is never given to a second delivery.
LEAN_DELIVERIES = """
    CREATE TABLE IF NOT EXISTS {name} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
        list_id INTEGER NOT NULL REFERENCES lists(id),
        state TEXT NOT NULL DEFAULT 'pending',
        phase TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_unix INTEGER,
        last_code INTEGER,
        last_reply TEXT,
        claimed_by TEXT,
        sent_unix INTEGER,
        variant TEXT,
        part TEXT,
        legacy_token BLOB,
        sent_to TEXT
    )"""
# Made after the rows are copied (sorting once is far faster than keeping an index
# in order through millions of inserts), each in a transaction of its own.
LEAN_INDEXES = (
    # one row per campaign x subscriber; an outbox build, the declined-campaign checks
    """CREATE UNIQUE INDEX IF NOT EXISTS deliveries_campaign_subscriber
       ON {name}(campaign_id, subscriber_id)""",
    # claims (pending and due deferred rows of a campaign, in id order), status counts
    "CREATE INDEX IF NOT EXISTS deliveries_by_campaign ON {name}(campaign_id, state)",
    # reports by list
    "CREATE INDEX IF NOT EXISTS deliveries_by_list ON {name}(list_id, state)",
    # a reader's deliveries: attribution by address, subscriber show, silent readers
    "CREATE INDEX IF NOT EXISTS deliveries_by_subscriber ON {name}(subscriber_id, state)",
    # tokens in mail sent before m020 (a personal coupon: a prefix of one)
    """CREATE UNIQUE INDEX IF NOT EXISTS deliveries_legacy_token ON {name}(legacy_token)
       WHERE legacy_token IS NOT NULL""",
)
# Rows m020 copies per committed transaction: a kill loses at most one batch's work.
LEAN_BATCH = 50_000
# Page cache (KiB) while m020 copies and sorts: its index builds sort millions of keys.
LEAN_CACHE_KIB = 65_536


def unix(iso: str) -> int:
    """An ISO 8601 time (as ``now()`` writes it) as Unix seconds."""
    return int(datetime.fromisoformat(iso).timestamp())


def seconds(at: datetime | None = None, *, round_up: bool = False) -> int:
    """A time as the Unix-seconds columns store it (deliveries' ``*_unix``, enrolments,
    sequences): ``at``, or now (``clock``) when it is None, in whole seconds rounded
    down, or up (``round_up``: the end of a wait, so that a row due again at that
    second is one whose wait is over)."""
    stamp = (at or clock()).timestamp()
    return math.ceil(stamp) if round_up else math.floor(stamp)


# SQL for a ``*_unix`` column as ``iso`` writes it (NULL stays NULL).
ISO_SQL = "strftime('%Y-%m-%dT%H:%M:%S+00:00', {}, 'unixepoch')"


def iso(seconds: int | None) -> str | None:
    """A ``*_unix`` column's value as an ISO 8601 UTC time (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


_TOKEN = re.compile(r"[a-z2-7]{16}")


def _token_bytes(token: str | None) -> bytes | None:
    """A stored token as ``legacy_token`` keeps it: the 10 bytes its base32 spells
    (``mail.tracking.token_bytes``, which this layer cannot import); anything else
    that sits in the column (no listkit wrote it) as its UTF-8, kept, never found."""
    if token is None:
        return None
    return base64.b32decode(token.upper()) if _TOKEN.fullmatch(token) else token.encode()


def copy_lean_batch(conn: sqlite3.Connection, size: int) -> int:
    """Copy the next ``size`` deliveries (by id) into ``deliveries_lean``, committed; how many
    (0 once another process converting the same database finished it)."""
    conn.create_function("lk_token_bytes", 1, _token_bytes, deterministic=True)
    begin_immediate(conn)
    try:
        n = _copy_lean(conn, size) if _converting(conn) else 0
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return n


def _converting(conn: sqlite3.Connection) -> bool:
    """Whether m020's copy is there to go on with (read inside the transaction that uses it)."""
    return bool(
        conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'deliveries_lean'").fetchone()
    )


def _copy_lean(conn: sqlite3.Connection, size: int) -> int:
    """The next ``size`` deliveries (-1: all the rest) copied, by id, in the transaction open.

    The progress marker is the copy itself: its highest id. A row whose message
    may have gone out (sent, unknown, in flight, or tried at least once) keeps
    its token as ``legacy_token``; one never tried (pending, held out,
    reserved) gets the derived token when it goes.
    """
    return conn.execute(
        """INSERT INTO deliveries_lean (id, campaign_id, subscriber_id, list_id, state,
                   phase, attempts, next_unix, last_code, last_reply, claimed_by, sent_unix,
                   variant, part, legacy_token, sent_to)
               SELECT d.id, d.campaign_id, d.subscriber_id, d.list_id, d.state, d.phase,
                   d.attempts, CAST(strftime('%s', d.next_attempt) AS INTEGER), d.last_code,
                   CASE WHEN d.state = 'sent' THEN NULL ELSE d.last_reply END,
                   CASE WHEN d.state = 'sending' THEN d.claimed_by END,
                   CAST(strftime('%s', d.sent_at) AS INTEGER), d.variant, d.part,
                   CASE WHEN d.attempts > 0 OR d.state IN ('sent', 'unknown', 'sending')
                        THEN lk_token_bytes(d.token) END,
                   CASE WHEN s.email IS NOT d.email THEN d.email END
               FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
               WHERE d.id > (SELECT coalesce(max(id), 0) FROM deliveries_lean)
               ORDER BY d.id LIMIT ?""",
        [size],
    ).rowcount


@migrations(transactional=False)
def m020_lean_deliveries(db: Database) -> None:
    """Deliveries rewritten into the lean row (``LEAN_DELIVERIES``), in place and resumably.

    Rows are copied into ``deliveries_lean`` ``LEAN_BATCH`` at a time, each batch
    committed; its indexes are made one per transaction; then one transaction
    drops the old table and gives the new one its name. Killed at any point, the
    next run goes on from the last commit: nothing copied twice, nothing lost.
    Foreign keys are off meanwhile, so that dropping the old table touches no
    event or sale that points at a delivery (the ids stay the same).
    """
    conn = db.conn
    with immediate(db):
        if "token" not in {r[1] for r in conn.execute("PRAGMA table_info(deliveries)")}:
            # Converted: by a run killed after the swap, before the step was recorded,
            # or by another process converting at the same time.
            return
        conn.execute(LEAN_DELIVERIES.format(name="deliveries_lean"))
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute(f"PRAGMA cache_size = {-LEAN_CACHE_KIB}")
    (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()
    if last > LEAN_BATCH and sys.stderr.isatty():  # a person waits: say why (cron stays quiet)
        print(
            f"listkit: converting the deliveries table (up to {last:,} rows) to its lean "
            "form, once; interrupted, it goes on where it stopped",
            file=sys.stderr,
            flush=True,
        )
    try:
        while copy_lean_batch(conn, LEAN_BATCH):
            pass
        for sql in LEAN_INDEXES:
            with immediate(db):
                if _converting(conn):
                    conn.execute(sql.format(name="deliveries_lean"))
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with immediate(db):
                if _converting(conn):  # else another process converting it finished first
                    _copy_lean(conn, -1)  # rows another program added meanwhile, if any
                    conn.execute("DROP TABLE deliveries")
                    conn.execute("ALTER TABLE deliveries_lean RENAME TO deliveries")
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")


@migrations()
def m021_sequences(db: Database) -> None:
    """Sequences: messages that start from a reader's own moment (joining, buying).

    ``sequences``: one row per ``sequences/<slug>.toml`` listkit has read
    (``send.sequence_files``), with its trigger, every step it ever had in
    order (JSON; a removed one flagged), its first step and that step's delay,
    and ``created``: only a trigger from then on enrols. ``campaigns`` gains
    ``sequence_id`` and ``step``: each step is a campaign row (slug
    ``<sequence>/<step>``), so its messages are deliveries like a campaign's.
    ``enrollments``: one row per reader and sequence (``audience.enrollments``);
    times there are Unix seconds, and ``next_due`` is read as a range through
    the partial index of active rows, so a tick with nothing due reads nothing.
    """
    db.execute(
        """
        CREATE TABLE sequences (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL UNIQUE,
            trigger TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL,
            imported TEXT NOT NULL DEFAULT 'ignore',
            holdout REAL NOT NULL DEFAULT 0,
            exits TEXT NOT NULL DEFAULT '[]',
            steps TEXT NOT NULL DEFAULT '[]',
            first_step TEXT,
            first_after INTEGER,
            state TEXT NOT NULL DEFAULT 'live',
            created INTEGER NOT NULL,
            updated INTEGER
        )"""
    )
    db.execute("ALTER TABLE campaigns ADD COLUMN sequence_id INTEGER REFERENCES sequences(id)")
    db.execute("ALTER TABLE campaigns ADD COLUMN step TEXT")
    db.execute("CREATE INDEX campaigns_sequence ON campaigns(sequence_id, step)")
    # state: active | finished | exited | held_out
    db.execute(
        """
        CREATE TABLE enrollments (
            id INTEGER PRIMARY KEY,
            sequence_id INTEGER NOT NULL REFERENCES sequences(id) ON DELETE CASCADE,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
            list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL,
            sale_id INTEGER REFERENCES sales(id) ON DELETE SET NULL,
            state TEXT NOT NULL DEFAULT 'active',
            trigger_at INTEGER NOT NULL,
            trigger_ref TEXT NOT NULL,
            step TEXT,
            step_at INTEGER,
            next_step TEXT,
            next_due INTEGER,
            exit_reason TEXT,
            exit_at INTEGER,
            created INTEGER NOT NULL,
            updated INTEGER,
            UNIQUE (sequence_id, subscriber_id)
        )"""
    )
    db.execute("CREATE INDEX enrollments_due ON enrollments(next_due) WHERE state = 'active'")
    # One sequence's due readers, what passing them needs, from the index alone
    # (bench/sequences.py: finding them then costs about what counting them does).
    db.execute(
        """CREATE INDEX enrollments_step_due ON enrollments(sequence_id, next_due, next_step,
           subscriber_id, list_id) WHERE state = 'active'"""
    )
    db.execute("CREATE INDEX enrollments_subscriber ON enrollments(subscriber_id)")
    db.execute("CREATE INDEX enrollments_sale ON enrollments(sale_id) WHERE sale_id IS NOT NULL")
    db.execute("CREATE INDEX enrollments_state ON enrollments(sequence_id, state, step)")


@migrations()
def m023_report_deliveries_index(db: Database) -> None:
    # `listkit report` counts a period's deliveries per campaign, state and list in
    # one pass over this index, never reading the table: the list, campaign and offer
    # views, complaint rates and holdouts all come from that pass (variant: an offer
    # test's deliveries, read without the table too). Its first two columns are
    # deliveries_by_campaign's (a campaign's deliveries in a state: claims, status),
    # whose place it takes.
    db.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_report "
        "ON deliveries(campaign_id, state, list_id, variant)"
    )
    db.execute("DROP INDEX IF EXISTS deliveries_by_campaign")
    db.execute("DROP INDEX IF EXISTS deliveries_state")


@migrations()
def m024_delivery_counts(db: Database) -> None:
    """Deliveries counted per campaign, state and list, kept by triggers.

    ``listkit report`` reads its counts of deliveries here instead of passing over
    millions of rows. The triggers change a count in the same transaction as the
    delivery they count (an insert, a change of state, list or campaign, a delete,
    the deletes a campaign's removal cascades to), so a crash leaves both or
    neither: the counts are what a ``GROUP BY`` over ``deliveries`` would give. A
    count that falls to 0 stays, as 0.
    """
    db.execute(
        """
        CREATE TABLE delivery_counts (
            campaign_id INTEGER NOT NULL,
            state TEXT NOT NULL,
            list_id INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (campaign_id, state, list_id)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """INSERT INTO delivery_counts (campaign_id, state, list_id, n)
           SELECT campaign_id, state, list_id, COUNT(*) FROM deliveries
           GROUP BY campaign_id, state, list_id"""
    )
    add = """INSERT INTO delivery_counts (campaign_id, state, list_id, n)
             VALUES (NEW.campaign_id, NEW.state, NEW.list_id, 1)
             ON CONFLICT (campaign_id, state, list_id) DO UPDATE SET n = n + 1;"""
    remove = """UPDATE delivery_counts SET n = n - 1 WHERE campaign_id = OLD.campaign_id
                AND state = OLD.state AND list_id = OLD.list_id;"""
    db.execute(f"CREATE TRIGGER delivery_counts_insert AFTER INSERT ON deliveries BEGIN {add} END")
    db.execute(
        f"CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries BEGIN {remove} END"
    )
    db.execute(
        f"""CREATE TRIGGER delivery_counts_update AFTER UPDATE OF campaign_id, state, list_id
            ON deliveries WHEN OLD.campaign_id IS NOT NEW.campaign_id
              OR OLD.state IS NOT NEW.state OR OLD.list_id IS NOT NEW.list_id
            BEGIN {remove} {add} END"""
    )


# Removing a NOT NULL constraint changes no stored row, only the table's CREATE
# statement: SQLite's documented procedure for that edits the statement in
# sqlite_schema and bumps the schema version (https://www.sqlite.org/lang_altertable.html,
# "Making Other Kinds Of Table Schema Changes"), where a rebuild would copy
# every row.
def _drop_not_null(conn: sqlite3.Connection, table: str, column: str) -> None:
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
    ).fetchone()
    new, n = re.subn(rf"(\b{column}\s+TEXT)\s+NOT\s+NULL\b", r"\1", sql, count=1)
    if n == 0:
        notnull = {r[1]: r[3] for r in conn.execute(f"PRAGMA table_info({table})")}
        if notnull[column]:  # spelled in a way this step does not know: stop, change nothing
            raise RuntimeError(f"cannot find the NOT NULL of {table}.{column} in its schema")
        return  # already nullable
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", [new, table]
        )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


@migrations()
def m025_imports(db: Database) -> None:
    """Each import's time and source stored once, in ``imports``.

    A subscriber or membership an import made points at its import
    (``import_id``) and leaves the columns the import would fill with the same
    value on every row as NULL: a subscriber's ``created`` and ``source``, a
    membership's ``created``, ``consent_method`` ('import') and
    ``consent_source``. Readers take them through ``listkit.audience.provenance``;
    a value written later (a signup's consent) is stored and wins. Rows made
    before this step keep their values.
    """
    db.execute(
        """
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            source TEXT NOT NULL,
            list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL
        )"""
    )
    db.execute("ALTER TABLE subscribers ADD COLUMN import_id INTEGER REFERENCES imports(id)")
    db.execute("ALTER TABLE memberships ADD COLUMN import_id INTEGER REFERENCES imports(id)")
    _drop_not_null(db.conn, "subscribers", "created")
    _drop_not_null(db.conn, "memberships", "created")
