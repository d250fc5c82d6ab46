"""Importing subscribers from the exports people already have.

Mailchimp (subscribed, unsubscribed and cleaned exports), Substack, Kit
(ConvertKit), Ghost and Beehiiv member exports are recognised by their
headers; any other CSV maps its columns by option.

The rule: a bad row never stops the good ones. Each rejected row is reported
with its physical line number and the reason, and everything else is imported
in one transaction, so an import either lands whole or (for a file-level
problem such as a wrong encoding) not at all. Only a status that clearly
means mailable makes a member active: rows an export marks unsubscribed,
cleaned, bounced or complained become suppressions, rows not confirmed yet
become pending members (never mailed, not suppressed; a later export saying
active makes them active, unless they are pending through our own signup
form), and a status listkit does not know rejects its row. A suppressed or
unsubscribed address is never made active again by an import. Times are read by
``listkit.times`` and stored as UTC ISO 8601.

Text is cleaned as ``listkit.text`` says: names, column names and the file
name kept as the source are one line (a control character, a line break
included, becomes a space); a custom field keeps its line breaks and loses any
other control character; a row holding a NUL byte is rejected. Every column
that is not stored in a place of its own (address, names, consent and
confirm times and IPs, the status column) becomes a custom field.

The file is streamed in chunks: memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import gc
import io
import json
import multiprocessing
import os
import sqlite3
import stat
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any, NamedTuple

from sqlite_utils import Database

from listkit import csvin, csvout, vocab
from listkit.addresses import address_and_key
from listkit.audience.enrollments import enrol_imported
from listkit.audience.lists import get_list
from listkit.audience.provenance import CONSENT_METHOD
from listkit.db import immediate, now
from listkit.errors import InputError, ListkitError, NotFound, quoted
from listkit.names import MAX_NAME, join_name
from listkit.processes import exit_with_parent
from listkit.text import lines, one_line
from listkit.times import parse_time

CHUNK = 1000  # rows per chunk: small enough to stay in the CPU caches
MAX_FIELD = 64 * 1024  # a longer value is refused (the row is rejected)
IMPORT_CACHE_KIB = 65_536  # SQLite's page cache while an import writes (see _write)

FORMATS = ("auto", "mailchimp", "substack", "kit", "ghost", "beehiiv", "csv")

# Statuses an export row can carry: a membership's active or pending, or a
# suppression reason, and the membership status each reason leaves.
ACTIVE, PENDING = vocab.ACTIVE, vocab.PENDING
UNSUBSCRIBED, BOUNCED, COMPLAINED = vocab.UNSUBSCRIBED, vocab.HARD_BOUNCE, vocab.COMPLAINT
MEMBER_STATUS = {
    UNSUBSCRIBED: vocab.UNSUBSCRIBED,
    BOUNCED: vocab.BOUNCED,
    COMPLAINED: vocab.COMPLAINED,
}
TRUE = frozenset({"true", "1", "yes", "y", "t"})
FALSE = frozenset({"false", "0", "no", "n", "f"})
# Substack replaces the address of a reader who asked to be deleted with a
# placeholder at this domain: nobody to mail, nothing to keep.
DELETION_REQUEST = "@deletion-request.substack.com"


class _BadRow(Exception):
    """A row that cannot be imported; the message is the reason."""


@dataclass(frozen=True)
class Status:
    """How a row's status is read, as data (``status_reader`` reads it).

    ``fixed``: every row has it (a Mailchimp export is one status). ``flag``:
    a true/false column and the status each means; empty is the producer's
    default (active), anything else rejects the row. ``states``: the status
    columns (the first present counts) and the status of each value, lower
    case; a value not named rejects the row. ``gone_at``: a date in this
    column makes the row unsubscribed (a member deleted or unsubscribed in
    the producer). Without its column, a row is active.
    """

    fixed: str | None = None
    flag: tuple[str, str, str] | None = None  # (column, status when true, when false)
    states: tuple[tuple[str, ...], dict[str, str]] | None = None  # (columns, value -> status)
    gone_at: str = ""


@dataclass(frozen=True)
class Shape:
    """How one export's columns map onto a subscriber."""

    name: str
    email: str
    full_name: str | None = None  # the column of a whole name
    first_name: str | None = None  # the columns of first and last names, kept apart
    last_name: str | None = None
    consent_at: str | None = None
    confirmed_at: str | None = None
    consent_ip: str | None = None
    confirm_ip: str | None = None
    status_at: str | None = None  # when the row stopped being mailable
    known: frozenset[str] = frozenset()
    times: frozenset[str] = frozenset()  # columns holding times, stored as UTC wherever kept
    status: Status | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c in (self.full_name, self.first_name, self.last_name) if c)


def status_reader(status: Status, idx: dict[str, int]) -> Callable[[list[str]], str]:
    """The function giving each row's status for a header (column -> index); it
    raises _BadRow for a value the status description does not allow."""
    if status.fixed is not None:
        fixed = status.fixed
        return lambda row: fixed
    gone = idx.get(status.gone_at) if status.gone_at else None
    if status.flag is not None:
        column, when_true, when_false = status.flag
        i = idx.get(column)
        if i is None:
            return lambda row: ACTIVE

        def flag(row: list[str]) -> str:
            if gone is not None and row[gone].strip():
                return UNSUBSCRIBED
            value = row[i].strip()
            lowered = value.lower()
            if lowered in TRUE:
                return when_true
            if lowered in FALSE:
                return when_false
            if lowered:
                raise _BadRow(f"{column} {quoted(value)} is not true or false")
            return ACTIVE  # left empty: the producer's default (subscribed)

        return flag
    assert status.states is not None
    columns, mapping = status.states
    column = next((c for c in columns if c in idx), None)
    if column is None:
        return lambda row: ACTIVE
    i, known = idx[column], ", ".join(mapping)

    def state(row: list[str]) -> str:
        value = row[i].strip()
        found = mapping.get(value.lower())
        if found is None:
            raise _BadRow(
                f"{column} {quoted(value)} is not one listkit knows ({known})"
                if value
                else f"{column} is empty (expected one of {known})"
            )
        if gone is not None and found in (ACTIVE, PENDING) and row[gone].strip():
            return UNSUBSCRIBED
        return found

    return state


# The columns of a subscribed export, in the export's order (audience merge
# fields stand between the names and MEMBER_RATING, TAGS last).
MAILCHIMP_SUBSCRIBED = (
    "Email Address",
    "First Name",
    "Last Name",
    "MEMBER_RATING",
    "OPTIN_TIME",
    "OPTIN_IP",
    "CONFIRM_TIME",
    "CONFIRM_IP",
    "LATITUDE",
    "LONGITUDE",
    "GMTOFF",
    "DSTOFF",
    "TIMEZONE",
    "CC",
    "REGION",
    "LAST_CHANGED",
    "LEID",
    "EUID",
    "NOTES",
)
# Kit's subscriber states; `inactive` is a subscriber who has not confirmed yet.
KIT_STATES = {
    "active": ACTIVE,
    "inactive": PENDING,
    "cancelled": UNSUBSCRIBED,
    "canceled": UNSUBSCRIBED,
    "unsubscribed": UNSUBSCRIBED,
    "bounced": BOUNCED,
    "complained": COMPLAINED,
}
# Beehiiv's subscription statuses: `inactive` is unsubscribed; `pending`
# (double opt-in not confirmed), `validating` (the address is being checked)
# and `needs_attention` (held by Beehiiv) are not mailable yet; `invalid`
# failed Beehiiv's address check, as a bounce would.
BEEHIIV_STATES = {
    "active": ACTIVE,
    "inactive": UNSUBSCRIBED,
    "pending": PENDING,
    "validating": PENDING,
    "needs_attention": PENDING,
    "invalid": BOUNCED,
}


@dataclass(frozen=True)
class Format:
    """One producer's export: the columns that recognise it and how they map.

    Recognised when the header has every column of ``needs`` and, if given,
    one of ``needs_one_of``; with ``any_case`` column names match in any case
    (Kit's vary) and the shape names them as the file spells them. Each
    column of the shape is a column name or a tuple of names, the first
    present counting; ``known`` and ``times`` name columns that may be absent.
    """

    format: str  # the --format name
    name: str  # the name an import reports
    needs: tuple[str, ...]
    needs_one_of: tuple[str, ...] = ()
    any_case: bool = False
    email: str | tuple[str, ...] = "email"
    full_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    consent_at: str | None = None
    confirmed_at: str | None = None
    consent_ip: str | None = None
    confirm_ip: str | None = None
    status_at: str | None = None
    known: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    status: Status = Status(fixed=ACTIVE)

    def shape(self, header: Sequence[str]) -> Shape | None:
        """This format's shape of ``header``, or None when the header is not its."""
        fold = str.lower if self.any_case else str
        spelled = {fold(c): c for c in header}

        def column(names: str | tuple[str, ...] | None) -> str | None:
            """The first of ``names`` the header has, as the header spells it."""
            for n in (names,) if isinstance(names, str) else names or ():
                if fold(n) in spelled:
                    return spelled[fold(n)]
            return None

        def present(names: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(c for c in map(column, names) if c is not None)

        if len(present(self.needs)) < len(self.needs):
            return None
        if self.needs_one_of and column(self.needs_one_of) is None:
            return None
        status = self.status
        if status.states is not None:
            columns, mapping = status.states
            status = replace(status, states=(present(columns), mapping))
        return Shape(
            self.name,
            email=column(self.email) or "",
            full_name=column(self.full_name),
            first_name=column(self.first_name),
            last_name=column(self.last_name),
            consent_at=column(self.consent_at),
            confirmed_at=column(self.confirmed_at),
            consent_ip=column(self.consent_ip),
            confirm_ip=column(self.confirm_ip),
            status_at=column(self.status_at),
            known=frozenset(present(self.known)),
            times=frozenset(present(self.times)),
            status=status,
        )


_MAILCHIMP = Format(
    "mailchimp",
    "mailchimp",
    needs=("Email Address",),
    email="Email Address",
    first_name="First Name",
    last_name="Last Name",
    consent_at="OPTIN_TIME",
    confirmed_at="CONFIRM_TIME",
    consent_ip="OPTIN_IP",
    confirm_ip="CONFIRM_IP",
    # Stored in places of their own; every other column (MEMBER_RATING,
    # TIMEZONE, CC, LEID, TAGS, UNSUB_REASON, ...) is kept as a custom field.
    known=(
        "Email Address",
        "First Name",
        "Last Name",
        "OPTIN_TIME",
        "OPTIN_IP",
        "CONFIRM_TIME",
        "CONFIRM_IP",
    ),
    times=("OPTIN_TIME", "CONFIRM_TIME", "UNSUB_TIME", "CLEAN_TIME", "LAST_CHANGED"),
)
_KIT = Format(
    "kit",
    "kit",
    needs=("email_address",),
    any_case=True,
    email=("email_address", "email"),
    first_name="first_name",
    last_name="last_name",
    consent_at="created_at",
    known=("email", "email_address", "first_name", "last_name", "state", "status", "created_at"),
    times=("created_at",),
    status=Status(states=(("state", "status"), KIT_STATES)),
)

# Every export listkit recognises, in the order an automatic detection tries
# them: the first whose columns the header has is the file's format.
FORMAT_TABLE: tuple[Format, ...] = (
    replace(
        _MAILCHIMP,
        name="mailchimp (cleaned)",
        needs=("Email Address", "CLEAN_TIME"),
        status_at="CLEAN_TIME",
        status=Status(fixed=BOUNCED),
    ),
    replace(
        _MAILCHIMP,
        name="mailchimp (unsubscribed)",
        needs=("Email Address", "UNSUB_TIME"),
        status_at="UNSUB_TIME",
        status=Status(fixed=UNSUBSCRIBED),
    ),
    _MAILCHIMP,
    Format(
        "substack",
        "substack",
        # The signups file has active_subscription; the paid subscribers
        # file has expiry and type instead.
        needs=("email", "email_disabled"),
        needs_one_of=("active_subscription", "expiry"),
        consent_at="created_at",
        known=("email", "email_disabled", "created_at"),
        times=("created_at", "expiry", "first_payment_at"),
        status=Status(flag=("email_disabled", UNSUBSCRIBED, ACTIVE)),
    ),
    Format(
        "ghost",
        "ghost",
        needs=("email", "subscribed_to_emails"),
        full_name="name",
        consent_at="created_at",
        status_at="deleted_at",
        known=("email", "name", "subscribed_to_emails", "created_at"),
        times=("created_at", "deleted_at"),
        status=Status(flag=("subscribed_to_emails", ACTIVE, UNSUBSCRIBED), gone_at="deleted_at"),
    ),
    Format(
        "beehiiv",
        "beehiiv",
        needs=("email", "status"),
        needs_one_of=("First Name", "tier"),
        first_name="First Name",
        last_name="Last Name",
        consent_at="created_at",
        status_at="unsubscribed_at",
        known=("email", "First Name", "Last Name", "status", "created_at"),
        times=("created_at", "unsubscribed_at", "Subscription Date (Substack)"),
        status=Status(states=(("status",), BEEHIIV_STATES), gone_at="unsubscribed_at"),
    ),
    _KIT,
    replace(_KIT, needs=("email",), needs_one_of=("state", "status")),
)
# What a format asked for by name needs, for the error when a header lacks it.
FORMAT_NEEDS = {
    "mailchimp": "an 'Email Address' column",
    "substack": "'email' and 'active_subscription' columns",
    "ghost": "'email' and 'subscribed_to_emails' columns",
    "beehiiv": "'email', 'status' and 'First Name' columns",
    "kit": "an 'email' or 'email_address' column",
}


def detect(header: Sequence[str], wanted: str = "auto") -> Shape:
    """The export shape of a header row; InputError names the columns it lacks."""
    if wanted == "csv":
        raise AssertionError("generic CSV shapes come from generic_shape()")
    for fmt in FORMAT_TABLE:
        if wanted in ("auto", fmt.format) and (shape := fmt.shape(header)) is not None:
            return shape
    if wanted != "auto":
        raise InputError(f"this is not a {wanted} export: it needs {FORMAT_NEEDS[wanted]}")
    return generic_shape(header)


EMAIL_NAMES = ("email", "email address", "e-mail", "email_address", "mail", "emailaddress")
NAME_NAMES = ("name", "full name", "full_name", "fullname")
FIRST_NAMES = ("first name", "first_name", "firstname")
LAST_NAMES = ("last name", "last_name", "lastname")


def generic_shape(
    header: Sequence[str], email_column: str | None = None, name_column: str | None = None
) -> Shape:
    """A plain CSV: the address column by option or by a usual name."""
    lower = {c.strip().lower(): c for c in header}
    if email_column is not None:
        if email_column not in header:
            raise InputError(
                f"--email-column {email_column!r} is not in the header "
                f"(columns: {', '.join(quoted(c) for c in header)})"
            )
        email = email_column
    else:
        email = next((lower[n] for n in EMAIL_NAMES if n in lower), None)
        if email is None and any("@" in c for c in header):
            raise InputError(
                "the header has no address column and its first line holds an address: "
                "the file needs a header row naming its columns (email, name, ...)"
            )
        if email is None:
            raise InputError(
                "the header has no address column (looked for "
                + ", ".join(repr(n) for n in EMAIL_NAMES[:3])
                + f"); columns found: {', '.join(quoted(c) for c in header) or 'none'}. "
                "Name it with --email-column"
            )
    if name_column is not None and name_column not in header:
        raise InputError(f"--name-column {name_column!r} is not in the header")
    full = name_column or next((lower[n] for n in NAME_NAMES if n in lower), None)
    first = next((lower[n] for n in FIRST_NAMES if n in lower), None)
    last = next((lower[n] for n in LAST_NAMES if n in lower), None)
    shape = Shape("csv", email=email, full_name=full, first_name=first, last_name=last)
    return replace(shape, known=frozenset({email, *shape.names}))


@dataclass
class ImportSummary:
    file: str
    list: str
    format: str = ""
    rows: int = 0
    imported: int = 0
    updated: int = 0
    pending: int = 0  # on the list, waiting for a confirmation: never mailed until then
    suppressed: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(
        default_factory=lambda: {"duplicate": 0, "not_reactivated": 0, "deletion_request": 0}
    )
    errors: list[dict] = field(default_factory=list)  # the first few, for display
    errors_file: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_encoding(encoding: str) -> str:
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return "utf-8-sig"  # tolerate Excel's byte-order mark either way
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown --encoding {encoding!r}") from None
    if name.startswith(("utf-16", "utf-32")):
        raise InputError(f"--encoding {encoding} is not supported: save the file as CSV UTF-8")
    return encoding


def import_subscribers(
    db: Database,
    stream: IO[bytes],
    list_slug: str,
    *,
    name: str = "-",
    fmt: str = "auto",
    encoding: str = "utf-8-sig",
    email_column: str | None = None,
    name_column: str | None = None,
    errors_to: IO[str] | None = None,
    errors_name: str | None = None,
    keep_errors: int = 20,
) -> ImportSummary:
    """Import an export file into a list; see the module docstring for the rules.

    A large file is read and validated in a second process (where ``fork``
    exists) while this one writes to the database: the two halves of the
    work take about as long as each other.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    encoding = _check_encoding(encoding)
    lst = get_list(db, list_slug)
    summary = ImportSummary(file=name, list=list_slug)
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    try:
        records = csvin.records(text, name)
        header: list[str] | None = None
        for line, row in records:
            if isinstance(row, str):
                raise InputError(f"{name}, line {line}: the header row is unreadable ({row})")
            if row and any(c.strip() for c in row):
                header = [one_line(c.strip().lstrip("\ufeff")) for c in row]
                break
        if header is None:
            raise InputError(f"{name} is empty: expected a header row and subscribers")
        if fmt in ("auto", "csv") and (email_column or name_column):
            fmt = "csv"
        shape = (
            generic_shape(header, email_column, name_column)
            if fmt == "csv"
            else detect(header, fmt)
        )
        summary.format = shape.name
        parser = _Parser(shape, header, CHUNK)
        with _without_cycle_collection():
            chunks = _reading(
                _from_process(parser.chunks, records)
                if _worth_a_process(stream)
                else parser.chunks(records),
                name,
            )
            try:
                _write(
                    db,
                    lst["id"],
                    name,
                    chunks,
                    summary,
                    header,
                    errors_to,
                    errors_name,
                    keep_errors,
                )
            finally:
                chunks.close()  # a reader process still running is ended now
    finally:
        text.detach()  # the caller's stream stays open
    return summary


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused while the rows go through (in the reader
    process too, which inherits it): an import makes millions of tuples, lists
    and strings that form no cycle and are freed by their counts alone, and the
    collector would walk them again and again (about 2% of an import's time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _reading(chunks: Iterator[_Chunk], name: str) -> Iterator[_Chunk]:
    """The chunks; a failure to read the file (in either process) becomes one line."""
    try:
        yield from chunks
    except OSError as e:
        raise InputError(
            f"reading {name} failed: {e.strerror or e}; nothing was imported"
        ) from None


def _database_error(e: sqlite3.OperationalError, db: Database) -> ListkitError:
    """What a failed write means for the user, in one line naming the database."""
    try:
        where = db.execute("PRAGMA database_list").fetchone()[2] or "the database"
    except sqlite3.Error:
        where = "the database"
    code = getattr(e, "sqlite_errorname", "")
    if code.startswith("SQLITE_FULL"):
        what = "the database or its disk is full. Free space on the disk and run the import again"
    elif code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        what = (
            "another process is writing to the database (a send or another import?). "
            "Run the import again when it has finished"
        )
    else:
        what = f"{e}"
    return ListkitError(f"cannot import into {where}: {what}; nothing was imported")


def _write(
    db: Database,
    list_id: int,
    name: str,
    chunks: Iterator[_Chunk],
    summary: ImportSummary,
    header: list[str],
    errors_to: IO[str] | None,
    errors_name: str | None,
    keep_errors: int,
) -> None:
    writer = csvout.writer(errors_to) if errors_to is not None else None
    if writer is not None:
        writer.writerow(["line", "reason", *header])
    # The file name, not its path: the evidence of where consent came from.
    out = _Writer(db, list_id, f"import:{one_line(os.path.basename(name) or name)}")
    # Every membership written below references the list checked under the
    # write lock and a subscriber inserted or looked up in the same
    # transaction, so SQLite's per-row foreign-key checks would only repeat
    # that (they cost about a tenth of the writing time). The pragma cannot
    # change inside a transaction, hence around it. So is the page cache's
    # size: the import's one holds the unique index of address keys as it grows
    # (45 MB at a million rows), where SQLite's default (2 MB) would spill most
    # of its pages to the WAL and read them back for the next keys (a quarter
    # of the writing time). The memory is taken only while importing.
    conn = db.conn
    (fk,) = conn.execute("PRAGMA foreign_keys").fetchone()
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute(f"PRAGMA cache_size = {-IMPORT_CACHE_KIB}")
    try:
        with immediate(db):
            if db.execute("SELECT 1 FROM lists WHERE id = ?", [list_id]).fetchone() is None:
                raise NotFound(f"list {summary.list!r} was removed before the import began")
            out.start()
            try:
                _write_chunks(out, chunks, summary, writer, keep_errors)
                enrol_imported(db, list_id, out.import_id)
                if errors_to is not None:
                    errors_to.flush()  # before the commit: all of it or nothing
            except OSError as e:
                if errors_to is None:
                    raise
                where = errors_name or "the errors file"
                raise InputError(
                    f"cannot write the rejected rows to {where}: {e.strerror or e}; "
                    "nothing was imported"
                ) from None
    except sqlite3.OperationalError as e:  # full, locked past the busy timeout, I/O
        raise _database_error(e, db) from None
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if fk else 'OFF'}")
        conn.execute(f"PRAGMA cache_size = {cache}")
    summary.imported, summary.updated, summary.pending = out.imported, out.updated, out.pending
    summary.suppressed, summary.skipped = out.suppressed, out.skipped


def _write_chunks(
    out: _Writer,
    chunks: Iterator[_Chunk],
    summary: ImportSummary,
    writer: Any,
    keep_errors: int,
) -> None:
    for chunk in chunks:
        summary.rows += chunk.rows
        summary.rejected += len(chunk.rejects)
        for line, reason, row in chunk.rejects:
            if len(summary.errors) < keep_errors:
                summary.errors.append({"line": line, "reason": reason})
            if writer is not None:
                writer.writerow([line, reason, *(row or [])])
        out.skipped["deletion_request"] += chunk.deletions
        out.skipped["duplicate"] += chunk.duplicates
        out.write(chunk)


PROCESS_MIN_BYTES = 1 << 20  # files smaller than this are read in this process


def _worth_a_process(stream: IO[bytes]) -> bool:
    """Whether to read ``stream`` in a second process: a large file or a pipe, on Linux."""
    if not sys.platform.startswith("linux"):
        return False  # fork is the only start method that can hand over an open stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return PROCESS_MIN_BYTES == 0  # an in-memory stream: only when asked for (tests)
    return not stat.S_ISREG(st.st_mode) or st.st_size >= PROCESS_MIN_BYTES


def _from_process(
    produce: Callable[[Iterator], Iterator[_Chunk]], records: Iterator
) -> Iterator[_Chunk]:
    """The chunks of ``produce(records)``, computed in a forked child process.

    The child inherits the open stream and the parser positioned after the
    header; it sends each chunk through a pipe (whose small buffer keeps
    memory flat) and ends with None, or with the exception that stopped it.
    """
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    _widen(receive)
    child = ctx.Process(
        target=_produce_into,
        args=(produce, records, send, receive, os.getpid()),
        name="listkit-import",
        daemon=True,
    )
    # A forked child closes sys.stdin as it starts: when the import reads
    # from stdin, that would close the very stream it inherited. Hide it.
    stdin, sys.stdin = sys.stdin, None  # type: ignore[assignment]
    try:
        child.start()
    finally:
        sys.stdin = stdin
    send.close()
    try:
        while True:
            try:
                item = receive.recv()
            except EOFError:
                child.join(5)
                raise ListkitError(
                    f"the import's reader process stopped unexpectedly (exit code "
                    f"{child.exitcode}); nothing was imported"
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()


PIPE_BYTES = 1 << 20  # a few chunks in flight: each process waits less for the other


def _widen(end: Any) -> None:
    """Give the pipe behind ``end`` room for several chunks, where Linux allows.

    A pipe holds 64 KB, less than one chunk: the reader would wait for the
    writer at every chunk, and under load the two would take turns instead
    of working at once. A larger pipe is only a kernel buffer; a failure
    leaves the default.
    """
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _produce_into(produce, records, send, receive, parent: int) -> None:
    # The receiving end belongs to the parent: holding it open here would keep
    # the pipe alive after the parent dies, and a write would block instead of
    # failing with EPIPE.
    receive.close()
    # Without this, a parent killed with SIGKILL would leave the reader blocked
    # forever on a full pipe.
    exit_with_parent(parent)
    try:
        for chunk in produce(records):
            send.send(chunk)
        send.send(None)
    except (ListkitError, OSError) as e:
        send.send(e)  # the parent words it
    except BaseException:
        send.send(ListkitError(f"reading the file failed:\n{traceback.format_exc()}"))


class _Chunk(NamedTuple):
    """Validated rows, at most one per address, in file order."""

    # (email, key, name, first name, last name, fields JSON)
    subs: list[tuple[str, str, str | None, str | None, str | None, str]]
    # (status, consent_at, confirmed_at, consent_ip, confirm_ip, status_at) per
    # sub, or None when every row is active and carries no consent evidence
    more: list[tuple[str, str | None, str | None, str | None, str | None, str | None]] | None
    all_active: bool
    rejects: list[tuple[int, str, list[str] | None]]
    rows: int
    deletions: int  # Substack's placeholders for deleted readers
    duplicates: int


_json_str = json.encoder.encode_basestring  # the C encoder: a JSON string literal


class _Parser:
    """Turns CSV records into validated chunks; runs in either process."""

    def __init__(self, shape: Shape, header: list[str], size: int):
        idx: dict[str, int] = {}
        for i, col in enumerate(header):
            idx.setdefault(col, i)
        self.size = size
        self.width = len(header)
        self.email_i = idx[shape.email]
        self.email_label = shape.email
        self.full_i, self.first_i, self.last_i = (
            idx.get(c) if c else None for c in (shape.full_name, shape.first_name, shape.last_name)
        )
        self.name_is = [i for i in (self.full_i, self.first_i, self.last_i) if i is not None]
        self.name_label = "/".join(header[i] for i in self.name_is)
        self.evidence = [
            idx.get(c) if c else None
            for c in (
                shape.consent_at,
                shape.confirmed_at,
                shape.consent_ip,
                shape.confirm_ip,
                shape.status_at,
            )
        ]
        self.times = [(i, col) for col, i in idx.items() if col in shape.times]
        self.extras = [
            (i, col, _json_str(col))
            for i, col in enumerate(header)
            if col and col not in shape.known and idx[col] == i and i not in self.name_is
        ]
        self.status = status_reader(shape.status, idx) if shape.status else None
        # Custom fields may span lines; every other column is one line.
        self.multiline = frozenset(i for i, _, _ in self.extras)

    def _names(self, row: list[str]) -> tuple[str | None, str | None, str | None]:
        """(full name, first name, last name) of a row; the full name joins the
        other two when the export has no column of its own for it."""
        first = (row[self.first_i].strip() or None) if self.first_i is not None else None
        last = (row[self.last_i].strip() or None) if self.last_i is not None else None
        full = (row[self.full_i].strip() or None) if self.full_i is not None else None
        return full or join_name(first, last), first, last

    def _clean(self, row: list[str]) -> list[str]:
        """The row's text as ``listkit.text`` cleans it (the address is left to its
        validation: a control character in it makes it invalid)."""
        email_i, multiline = self.email_i, self.multiline
        return [
            v if i == email_i else lines(v) if i in multiline else one_line(v)
            for i, v in enumerate(row)
        ]

    def _too_long(self, row: list[str], name: str | None) -> str | None:
        """Why a long row is refused (a name or a field over its limit), or None."""
        if name is not None and len(name) > MAX_NAME:
            return f"{self.name_label} is longer than {MAX_NAME} characters"
        for i, col, _ in self.extras:
            if len(row[i]) > MAX_FIELD:
                return f"field {col!r} is {len(row[i]) // 1024} KB (limit {MAX_FIELD // 1024} KB)"
        return None

    def _times(self, row: list[str]) -> list[str]:
        """The row with its time columns as UTC ISO 8601; _BadRow names a column that is not."""
        row = row.copy()  # the original stays as read, for --errors
        for i, col in self.times:
            if value := row[i].strip():
                try:
                    row[i] = parse_time(value, col)
                except InputError as e:
                    raise _BadRow(str(e)) from None
        return row

    def chunks(self, records: Iterator[tuple[int, list[str] | str]]) -> Iterator[_Chunk]:
        """Validated chunks of at most ``size`` rows (the hot loop of an import)."""
        width, email_i, size = self.width, self.email_i, self.size
        invalid = f"invalid address in column {quoted(self.email_label)}"
        times_of = self._times if self.times else None
        # The usual first and last name columns are read in the loop below
        # (_names without its general case: it runs for every row).
        first_and_last = self.full_i is None and None not in (self.first_i, self.last_i)
        first_i, last_i = (self.first_i, self.last_i) if first_and_last else (0, 0)
        names_of = self._names if self.name_is and not first_and_last else None
        clean = self._clean
        extras = [(i, encoded) for i, _, encoded in self.extras]
        # A file with one custom field (a plan, a tag) builds its JSON in one step.
        one_extra = len(extras) == 1
        one_i, one_e = extras[0] if one_extra else (0, "")
        status_of = self.status
        evidence_is = self.evidence
        has_evidence = any(i is not None for i in evidence_is)
        normalize, json_str, too_long = address_and_key, _json_str, self._too_long
        shortest_risky = min(MAX_NAME, MAX_FIELD)
        while True:
            subs: list = []
            more: list | None = [] if (status_of or has_evidence) else None
            rejects: list = []
            seen: set[str] = set()
            # One object for each value that repeats in the chunk (a first name,
            # a plan): the chunk is pickled to the writing process, and pickle
            # sends an object it has seen as a reference, so the writer makes
            # one string where it would make hundreds.
            share = {}.setdefault
            rows = deletions = duplicates = 0
            all_active = True
            for line, row in records:
                if row.__class__ is str:
                    rejects.append((line, row, None))
                    continue
                if not row:
                    continue  # a blank line
                rows += 1
                if len(row) < width:
                    row = row + [""] * (width - len(row))
                joined = "".join(row)
                if "\x00" in joined:
                    rejects.append((line, "contains a NUL byte", row))
                    continue
                given = row  # as read, for --errors
                if not joined.isprintable():  # C-fast: most rows need no cleaning
                    row = clean(row)
                raw = row[email_i]
                try:
                    address, key = normalize(raw)
                except InputError as e:
                    # The reason, never the address: errors quote nobody.
                    reason = f"{invalid}: {e}" if raw.strip() else "no address"
                    rejects.append((line, reason, given))
                    continue
                if key == address:
                    key = address  # the same object: see share
                if first_and_last:
                    first, last = row[first_i].strip() or None, row[last_i].strip() or None
                    name = f"{first} {last}" if first and last else first or last
                else:
                    name, first, last = names_of(row) if names_of else (None, None, None)
                # Only a long row can carry a name or a field over its limit.
                if len(joined) > shortest_risky and (problem := too_long(row, name)):
                    rejects.append((line, problem, given))
                    continue
                if key.endswith(DELETION_REQUEST):
                    deletions += 1
                    continue
                if times_of is not None or more is not None:
                    try:
                        kept = times_of(row) if times_of is not None else row
                        status = status_of(row) if status_of else ACTIVE
                    except _BadRow as e:
                        rejects.append((line, str(e), given))
                        continue
                else:
                    kept, status = row, ACTIVE
                if one_extra:
                    v = kept[one_i].strip()
                    fields = f"{{{one_e}:{json_str(v)}}}" if v else "{}"
                elif extras:
                    fields = (
                        "{"
                        + ",".join(
                            [f"{e}:{json_str(v)}" for i, e in extras if (v := kept[i].strip())]
                        )
                        + "}"
                    )
                else:
                    fields = "{}"
                if more is not None:
                    if key in seen:
                        duplicates += 1
                        continue
                    if status != ACTIVE:
                        all_active = False
                    more.append(
                        (
                            status,
                            *[
                                kept[i].strip() or None if i is not None else None
                                for i in evidence_is
                            ],
                        )
                    )
                elif key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                subs.append(
                    (
                        address,
                        key,
                        share(name, name),
                        share(first, first),
                        share(last, last),
                        share(fields, fields),
                    )
                )
                if len(subs) >= size:
                    break
            else:
                yield _Chunk(subs, more, all_active, rejects, rows, deletions, duplicates)
                return
            yield _Chunk(subs, more, all_active, rejects, rows, deletions, duplicates)


def _keys(subs: list[tuple[str, str, str | None, str | None, str | None, str]]) -> str:
    """The address keys of a chunk's rows, as a JSON array for ``json_each``."""
    return json.dumps([s[1] for s in subs])


class _Writer:
    """Writes chunks to the database inside the import's transaction.

    Every row is first offered to ``subscribers`` with ``ON CONFLICT DO
    NOTHING``. When all of a chunk's rows were new, active and unsuppressed
    (the bulk of a first import), their ids are the next ones in file order
    and their memberships follow in one statement. Otherwise the chunk's
    addresses are looked up and each row decided on its own: updated,
    a duplicate of an earlier row, suppressed, or not reactivated.
    """

    def __init__(self, db: Database, list_id: int, source: str):
        self.db = db
        self.list_id = list_id
        self.source = source
        self.imported = self.updated = self.suppressed = self.pending = 0
        self.skipped = {"duplicate": 0, "not_reactivated": 0, "deletion_request": 0}

    def start(self) -> None:
        db = self.db
        self.stamp = stamp = now()
        # The import's time and source are stored once (m025): every subscriber and
        # membership it makes points at this row instead of repeating them.
        self.import_id = import_id = db.execute(
            "INSERT INTO imports (at, source, list_id) VALUES (?, ?, ?)",
            [stamp, self.source, self.list_id],
        ).lastrowid
        self.q_source = db.execute("SELECT quote(?)", [self.source]).fetchone()[0]
        # Constants of the import go into the SQL, so that each row binds only its
        # own values.
        self.insert_subs = (
            "INSERT INTO subscribers (email, key, name, first_name, last_name, fields, "
            f"import_id) VALUES (?, ?, ?, ?, ?, ?, {import_id}) ON CONFLICT (key) DO NOTHING"
        )
        # OR ROLLBACK: memberships are only inserted where none exists, so a
        # conflict would be a bug, and it ends the import as any error does.
        # Without it SQLite keeps a statement journal (a temporary file the
        # size of the rows) to undo half a statement, for every chunk.
        member_columns = """INSERT OR ROLLBACK INTO memberships (list_id, subscriber_id, status,
            import_id, consent_at, consent_ip, confirmed_at, confirm_ip, status_at)"""
        self.insert_members = (
            f"{member_columns} VALUES ({self.list_id}, ?, ?, {import_id}, ?, ?, ?, ?, ?)"
        )
        self.insert_new_members = (
            f"{member_columns} SELECT {self.list_id}, id, 'active', {import_id}, NULL, NULL, "
            "NULL, NULL, NULL FROM subscribers WHERE id > ?"
        )
        self.any_suppressions = bool(
            db.execute("SELECT EXISTS (SELECT 1 FROM suppressions)").fetchone()[0]
        )

    def _last_id(self) -> int:
        return self.db.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]

    def write(self, chunk: _Chunk) -> None:
        subs = chunk.subs
        if not subs:
            return
        conn = self.db.conn
        suppressed: set[str] = set()
        if self.any_suppressions:
            suppressed = {
                key
                for (key,) in conn.execute(
                    "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?))",
                    [_keys(subs)],
                )
            }
        last = self._last_id()
        before = conn.total_changes
        conn.executemany(self.insert_subs, subs)
        added = conn.total_changes - before
        if (
            added == len(subs)
            and chunk.all_active
            and not suppressed
            and self._last_id() == last + added
        ):
            # All new: ids last+1 .. last+added, in the order of subs.
            if chunk.more is None:
                conn.execute(self.insert_new_members, [last])
            else:
                conn.executemany(
                    self.insert_members,
                    [
                        (sid, ACTIVE, c_at, c_ip, cf_at, cf_ip, None)
                        for sid, (_, c_at, cf_at, c_ip, cf_ip, _) in zip(
                            range(last + 1, last + added + 1), chunk.more, strict=True
                        )
                    ],
                )
            self.imported += added
            return
        self._decide(chunk, suppressed, last)

    def _decide(self, chunk: _Chunk, suppressed: set[str], last: int) -> None:
        """Row by row: the general case (existing subscribers, statuses, suppressions)."""
        stamp, list_id = self.stamp, self.list_id
        found, member, method = self._known(chunk, last)
        more = chunk.more or [(ACTIVE, None, None, None, None, None)] * len(chunk.subs)
        upd_subs, new_members, status_members, new_supp = [], [], [], []
        confirmed_members = []
        for (address, key, name, first_name, last_name, fields), (
            status,
            c_at,
            cf_at,
            c_ip,
            cf_ip,
            s_at,
        ) in zip(chunk.subs, more, strict=True):
            sid, import_id, updated = found[key]
            new = sid > last
            if not new:
                if import_id == self.import_id or updated == stamp:
                    self.skipped["duplicate"] += 1  # seen earlier in this file
                    continue
                upd_subs.append((name, first_name, last_name, fields, stamp, sid))
            current = None if new else member.get(sid)
            if status in MEMBER_STATUS:
                new_supp.append((key, address, status, stamp, self.source))
                self.suppressed += 1
                mstatus = MEMBER_STATUS[status]
                if current is None:
                    new_members.append((sid, mstatus, c_at, c_ip, cf_at, cf_ip, s_at or stamp))
                elif current in ("active", "pending"):
                    status_members.append((mstatus, s_at or stamp, stamp, list_id, sid))
                continue
            if key in suppressed or current not in (None, "active", "pending"):
                self.skipped["not_reactivated"] += 1
                if current is None:
                    new_members.append((sid, "unsubscribed", c_at, c_ip, cf_at, cf_ip, stamp))
                continue
            # A member pending by an import becomes active when a later export of
            # that service says active (they confirmed there; the export is the
            # consent record). One pending through our signup form becomes active
            # only by confirming with us. An active one is not made pending again.
            if current == "pending" and status == ACTIVE and method.get(sid) == "import":
                confirmed_members.append((c_at, c_ip, cf_at, cf_ip, stamp, stamp, list_id, sid))
                self.updated += 1
                continue
            if current == "pending" or (status == PENDING and current is None):
                if current is None:
                    new_members.append((sid, PENDING, c_at, c_ip, cf_at, cf_ip, None))
                self.pending += 1
                continue
            if current is None:
                new_members.append((sid, ACTIVE, c_at, c_ip, cf_at, cf_ip, None))
            if new:
                self.imported += 1
            else:
                self.updated += 1
        self._write_decisions(upd_subs, new_members, status_members, confirmed_members, new_supp)

    def _known(self, chunk: _Chunk, last: int) -> tuple[dict, dict, dict]:
        """The chunk's subscribers as stored (key -> (id, import_id, updated)), and the
        status and consent method of those already there before the chunk (id -> ...)."""
        conn = self.db.conn
        found = {
            key: (sid, import_id, updated)
            for key, sid, import_id, updated in conn.execute(
                """SELECT key, id, import_id, updated FROM subscribers
                   WHERE key IN (SELECT value FROM json_each(?))""",
                [_keys(chunk.subs)],
            )
        }
        old = [sid for sid, _, _ in found.values() if sid <= last]
        member, method = {}, {}
        if old:
            for sid, mstatus, how in conn.execute(
                f"""SELECT m.subscriber_id, m.status, {CONSENT_METHOD} FROM memberships m
                   WHERE m.list_id = ? AND m.subscriber_id IN (SELECT value FROM json_each(?))""",
                [self.list_id, json.dumps(old)],
            ):
                member[sid], method[sid] = mstatus, how
        return found, member, method

    def _write_decisions(
        self, upd_subs, new_members, status_members, confirmed_members, new_supp
    ) -> None:
        """The writes ``_decide`` chose, each kind in one executemany."""
        conn = self.db.conn
        # A row with a name replaces the whole name, parts included; one without
        # leaves it as it was.
        conn.executemany(
            """UPDATE subscribers SET name = coalesce(?1, name),
               first_name = iif(?1 IS NULL, first_name, ?2),
               last_name = iif(?1 IS NULL, last_name, ?3),
               fields = json_patch(fields, ?4), updated = ?5 WHERE id = ?6""",
            upd_subs,
        )
        conn.executemany(self.insert_members, new_members)
        conn.executemany(
            """UPDATE memberships SET status = ?, status_at = ?, updated = ?,
               status_reason = 'import' WHERE list_id = ? AND subscriber_id = ?""",
            status_members,
        )
        conn.executemany(
            f"""UPDATE memberships SET status = 'active', consent_method = 'import',
               consent_source = {self.q_source},
               consent_at = coalesce(?, consent_at), consent_ip = coalesce(?, consent_ip),
               confirmed_at = coalesce(?, confirmed_at), confirm_ip = coalesce(?, confirm_ip),
               status_at = ?, updated = ?, status_reason = 'active in a later export'
               WHERE list_id = ? AND subscriber_id = ? AND status = 'pending'""",
            confirmed_members,
        )
        if new_supp:
            conn.executemany(
                """INSERT INTO suppressions (key, email, reason, created, source)
                   VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
                new_supp,
            )
            self.any_suppressions = True
