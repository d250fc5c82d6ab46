"""Importing subscribers from the exports people already have.

Mailchimp (subscribed, unsubscribed and cleaned exports), Substack, Kit
(ConvertKit), Ghost and Beehiiv member exports are recognised by their
headers; any other CSV maps its columns by option.

The rule: a bad row never stops the good ones. Each rejected row is reported
with its physical line number and the reason, and everything else is imported
in one transaction, so an import either lands whole or (for a file-level
problem such as a wrong encoding) not at all. Rows an export marks
unsubscribed, cleaned, bounced or complained become suppressions, never
active members, and a suppressed or unsubscribed address is never made active
again by an import.

The file is streamed in chunks: memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from sqlite_utils import Database

from listkit.addresses import normalize_address
from listkit.db import immediate, now
from listkit.errors import InputError
from listkit.lists import get_list

CHUNK = 5000
MAX_FIELD = 64 * 1024  # a longer value is refused (the row is rejected)
MAX_NAME = 256
csv.field_size_limit(1024 * 1024)  # the parser's own limit; beyond it a record is re-read

FORMATS = ("auto", "mailchimp", "substack", "kit", "ghost", "beehiiv", "csv")

# Statuses an export row can carry.
ACTIVE, UNSUBSCRIBED, BOUNCED, COMPLAINED, PENDING = (
    "active",
    "unsubscribed",
    "hard_bounce",
    "complaint",
    "pending",
)
MEMBER_STATUS = {UNSUBSCRIBED: "unsubscribed", BOUNCED: "bounced", COMPLAINED: "complained"}
TRUE = frozenset({"true", "1", "yes", "y", "t"})


@dataclass(frozen=True)
class Shape:
    """How one export's columns map onto a subscriber."""

    name: str
    email: str
    names: tuple[str, ...] = ()
    consent_at: str | None = None
    confirmed_at: str | None = None
    consent_ip: str | None = None
    confirm_ip: str | None = None
    known: frozenset[str] = frozenset()
    # (header -> index) -> (row -> status)
    status: Callable[[dict[str, int]], Callable[[list[str]], str]] | None = None


def _always(value: str) -> Callable[[dict[str, int]], Callable[[list[str]], str]]:
    return lambda idx: lambda row: value


def _flag_column(column: str, when_true: str, when_false: str):
    def build(idx: dict[str, int]):
        i = idx.get(column)
        if i is None:
            return lambda row: ACTIVE

        def status(row: list[str]) -> str:
            value = row[i].strip().lower() if i < len(row) else ""
            return when_true if value in TRUE else when_false if value else ACTIVE

        return status

    return build


def _state_column(columns: Sequence[str], mapping: dict[str, str]):
    def build(idx: dict[str, int]):
        i = next((idx[c] for c in columns if c in idx), None)
        if i is None:
            return lambda row: ACTIVE

        def status(row: list[str]) -> str:
            value = row[i].strip().lower() if i < len(row) else ""
            return mapping.get(value, ACTIVE)

        return status

    return build


MAILCHIMP_KNOWN = frozenset(
    [
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
        "UNSUB_TIME",
        "UNSUB_CAMPAIGN_TITLE",
        "UNSUB_CAMPAIGN_ID",
        "UNSUB_REASON",
        "UNSUB_REASON_OTHER",
        "CLEAN_TIME",
        "CLEAN_CAMPAIGN_TITLE",
        "CLEAN_CAMPAIGN_ID",
    ]
)
_MAILCHIMP = {
    "email": "Email Address",
    "names": ("First Name", "Last Name"),
    "consent_at": "OPTIN_TIME",
    "confirmed_at": "CONFIRM_TIME",
    "consent_ip": "OPTIN_IP",
    "confirm_ip": "CONFIRM_IP",
    "known": MAILCHIMP_KNOWN,
}
KIT_STATES = {
    "active": ACTIVE,
    "cancelled": UNSUBSCRIBED,
    "canceled": UNSUBSCRIBED,
    "unsubscribed": UNSUBSCRIBED,
    "inactive": UNSUBSCRIBED,
    "bounced": BOUNCED,
    "complained": COMPLAINED,
}


def detect(header: Sequence[str], wanted: str = "auto") -> Shape:
    """The export shape of a header row; InputError names the columns it lacks."""
    cols = set(header)
    lower = {c.lower(): c for c in header}
    shapes: dict[str, Callable[[], Shape | None]] = {
        "mailchimp": lambda: (
            (
                Shape("mailchimp (cleaned)", **_MAILCHIMP, status=_always(BOUNCED))
                if "CLEAN_TIME" in cols
                else Shape("mailchimp (unsubscribed)", **_MAILCHIMP, status=_always(UNSUBSCRIBED))
                if "UNSUB_TIME" in cols
                else Shape("mailchimp", **_MAILCHIMP, status=_always(ACTIVE))
            )
            if "Email Address" in cols
            else None
        ),
        "substack": lambda: (
            Shape(
                "substack",
                email="email",
                consent_at="created_at",
                known=frozenset({"email", "email_disabled", "created_at"}),
                status=_flag_column("email_disabled", UNSUBSCRIBED, ACTIVE),
            )
            if {"email", "active_subscription"} <= cols
            else None
        ),
        "ghost": lambda: (
            Shape(
                "ghost",
                email="email",
                names=("name",),
                consent_at="created_at",
                known=frozenset({"id", "email", "name", "subscribed_to_emails", "created_at"}),
                status=_flag_column("subscribed_to_emails", ACTIVE, UNSUBSCRIBED),
            )
            if {"email", "subscribed_to_emails"} <= cols
            else None
        ),
        "beehiiv": lambda: (
            Shape(
                "beehiiv",
                email="email",
                names=("First Name", "Last Name"),
                consent_at="created_at",
                known=frozenset({"email", "First Name", "Last Name", "status", "created_at"}),
                status=_state_column(
                    ("status",), {"inactive": UNSUBSCRIBED, "pending": PENDING, "active": ACTIVE}
                ),
            )
            if {"email", "status"} <= cols and ("First Name" in cols or "tier" in cols)
            else None
        ),
        "kit": lambda: (
            Shape(
                "kit",
                email=lower.get("email_address") or lower["email"],
                names=tuple(lower[c] for c in ("first_name", "last_name") if c in lower),
                consent_at=lower.get("created_at"),
                known=frozenset(
                    lower[c]
                    for c in (
                        "email",
                        "email_address",
                        "first_name",
                        "last_name",
                        "state",
                        "status",
                        "created_at",
                    )
                    if c in lower
                ),
                status=_state_column(
                    [lower[c] for c in ("state", "status") if c in lower], KIT_STATES
                ),
            )
            if "email_address" in lower
            or ("email" in lower and ("state" in lower or "status" in lower))
            else None
        ),
    }
    if wanted == "csv":
        raise AssertionError("generic CSV shapes come from generic_shape()")
    order = list(shapes) if wanted == "auto" else [wanted]
    for name in order:
        shape = shapes[name]()
        if shape is not None:
            return shape
    if wanted != "auto":
        needs = {
            "mailchimp": "an 'Email Address' column",
            "substack": "'email' and 'active_subscription' columns",
            "ghost": "'email' and 'subscribed_to_emails' columns",
            "beehiiv": "'email', 'status' and 'First Name' columns",
            "kit": "an 'email' or 'email_address' column",
        }[wanted]
        raise InputError(f"this is not a {wanted} export: it needs {needs}")
    return generic_shape(header)


EMAIL_NAMES = ("email", "email address", "e-mail", "email_address", "mail", "emailaddress")
NAME_NAMES = ("name", "full name", "full_name", "fullname")


def generic_shape(
    header: Sequence[str], email_column: str | None = None, name_column: str | None = None
) -> Shape:
    """A plain CSV: the address column by option or by a usual name."""
    lower = {c.strip().lower(): c for c in header}
    if email_column is not None:
        if email_column not in header:
            raise InputError(
                f"--email-column {email_column!r} is not in the header "
                f"(columns: {', '.join(header)})"
            )
        email = email_column
    else:
        email = next((lower[n] for n in EMAIL_NAMES if n in lower), None)
        if email is None:
            raise InputError(
                "the header has no address column (looked for "
                + ", ".join(repr(n) for n in EMAIL_NAMES[:3])
                + f"); columns found: {', '.join(repr(c) for c in header) or 'none'}. "
                "Name it with --email-column"
            )
    if name_column is not None:
        if name_column not in header:
            raise InputError(f"--name-column {name_column!r} is not in the header")
        names: tuple[str, ...] = (name_column,)
    elif any(n in lower for n in NAME_NAMES):
        names = (next(lower[n] for n in NAME_NAMES if n in lower),)
    else:
        names = tuple(
            lower[n]
            for n in ("first name", "first_name", "firstname", "last name", "last_name", "lastname")
            if n in lower
        )[:2]
    return Shape("csv", email=email, names=names, known=frozenset({email, *names}))


@dataclass
class ImportSummary:
    file: str
    list: str
    format: str = ""
    rows: int = 0
    imported: int = 0
    updated: int = 0
    suppressed: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(
        default_factory=lambda: {"duplicate": 0, "not_reactivated": 0, "pending": 0}
    )
    errors: list[dict] = field(default_factory=list)  # the first few, for display
    errors_file: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Lines:
    """The decoded lines of a file, numbered, with a way to read some again.

    The CSV parser pulls lines from here; ``taken`` holds the lines of the
    record being parsed, so that when a record is broken (unclosed quote,
    oversized field) its first line is rejected and the rest are parsed again:
    one bad quote does not swallow the rows after it.
    """

    def __init__(self, text: Iterator[str]):
        self._text = text
        self._again: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._again:
            number, line = self._again.popleft()
        else:
            line = next(self._text)
            self.number += 1
            number = self.number
        self.taken.append((number, line))
        return line

    def again(self, lines: list[tuple[int, str]]) -> None:
        self._again.extendleft(reversed(lines))


_EOL = re.compile(r"\r\n|\r|\n")


class _BadEncoding(Exception):
    def __init__(self, line: int, byte: int):
        self.line, self.byte = line, byte


def _decoded_lines(stream: IO[bytes], encoding: str) -> Iterator[str]:
    """Decoded lines with their ends (LF, CRLF or a lone CR), one physical line each."""
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 0
    for raw in stream:
        try:
            text = decoder.decode(raw)
        except UnicodeDecodeError as e:
            raise _BadEncoding(number + 1 + raw.count(b"\r", 0, e.start), raw[e.start]) from None
        cr = text.find("\r")
        if cr == -1 or (cr == len(text) - 2 and text[-1] == "\n"):
            number += 1
            yield text
            continue
        start = 0
        for m in _EOL.finditer(text):
            number += 1
            yield text[start : m.end()]
            start = m.end()
        if start < len(text):
            number += 1
            yield text[start:]


def _records(stream: IO[bytes], encoding: str, where: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line, fields) for each record, or (line, reason) for a broken one."""
    lines = _Lines(_decoded_lines(stream, encoding))
    reader = csv.reader(lines, strict=True)
    while True:
        lines.taken = []
        try:
            row = next(reader)
        except StopIteration:
            return
        except _BadEncoding as e:
            name = "UTF-8" if encoding == "utf-8-sig" else encoding
            raise InputError(
                f"{where}, line {e.line}: not {name} text (byte 0x{e.byte:02x}). If the file is "
                "Latin-1 or Windows-1252, run again with --encoding latin-1 (or cp1252); "
                "nothing was imported"
            ) from None
        except csv.Error as e:
            taken = lines.taken
            first = taken[0][0] if taken else lines.number
            reason = (
                "unclosed quote"
                if "unexpected end of data" in str(e) or len(taken) > 1
                else f"unreadable CSV ({e})"
            )
            if "field larger" in str(e):
                reason = "a field is larger than 1 MB (or a quote is not closed)"
            yield first, reason
            lines.again(taken[1:])
            reader = csv.reader(lines, strict=True)
            continue
        yield (lines.taken[0][0] if lines.taken else lines.number), row


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
    keep_errors: int = 20,
) -> ImportSummary:
    """Import an export file into a list; see the module docstring for the rules."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # tolerate Excel's byte-order mark either way
    try:
        if codecs.lookup(encoding).name.startswith("utf-16") or encoding.lower().startswith(
            "utf-32"
        ):
            raise InputError(f"--encoding {encoding} is not supported: save the file as CSV UTF-8")
    except LookupError:
        raise InputError(f"unknown --encoding {encoding!r}") from None
    lst = get_list(db, list_slug)
    summary = ImportSummary(file=name, list=list_slug)
    records = _records(stream, encoding, name)
    header: list[str] | None = None
    for line, row in records:
        if isinstance(row, str):
            raise InputError(f"{name}, line {line}: the header row is unreadable ({row})")
        if row and any(c.strip() for c in row):
            header = [c.strip().lstrip("\ufeff") for c in row]
            break
    if header is None:
        raise InputError(f"{name} is empty: expected a header row and subscribers")
    if fmt in ("auto", "csv") and (email_column or name_column):
        fmt = "csv"
    shape = (
        generic_shape(header, email_column, name_column) if fmt == "csv" else detect(header, fmt)
    )
    summary.format = shape.name
    writer = csv.writer(errors_to) if errors_to is not None else None
    if writer is not None:
        writer.writerow(["line", "reason", *header])
    rejected_rows = 0

    def reject(line: int, reason: str, row: list[str] | None) -> None:
        nonlocal rejected_rows
        rejected_rows += 1
        if len(summary.errors) < keep_errors:
            summary.errors.append({"line": line, "reason": reason})
        if writer is not None:
            writer.writerow([line, reason, *(row or [])])

    importer = _Importer(db, lst["id"], shape, header, source=f"import:{name}")
    with immediate(db):
        importer.start()
        for line, row in records:
            if isinstance(row, str):
                reject(line, row, None)
                continue
            if not row:
                continue  # a blank line
            summary.rows += 1
            problem = importer.add(line, row)
            if problem is not None:
                reject(line, problem, row)
        importer.flush()
    summary.rejected = rejected_rows
    summary.imported = importer.imported
    summary.updated = importer.updated
    summary.suppressed = importer.suppressed
    summary.skipped = importer.skipped
    return summary


_json_str = json.encoder.encode_basestring  # the C encoder: a JSON string literal


class _Importer:
    """Validates rows and writes them to the database a chunk at a time."""

    def __init__(self, db: Database, list_id: int, shape: Shape, header: list[str], source: str):
        self.db = db
        self.list_id = list_id
        self.source = source
        idx: dict[str, int] = {}
        for i, col in enumerate(header):
            idx.setdefault(col, i)
        self.width = len(header)
        self.email_i = idx[shape.email]
        self.name_is = [idx[c] for c in shape.names if c in idx]
        self.names = {i: header[i] for i in self.name_is}
        self.evidence = [
            idx.get(c) if c else None
            for c in (shape.consent_at, shape.confirmed_at, shape.consent_ip, shape.confirm_ip)
        ]
        self.extras = [
            (i, col, _json_str(col))
            for i, col in enumerate(header)
            if col and col not in shape.known and idx[col] == i and i not in self.name_is
        ]
        self.status = shape.status(idx) if shape.status else (lambda row: ACTIVE)
        self.chunk: dict[str, tuple] = {}
        self.imported = self.updated = self.suppressed = 0
        self.skipped = {"duplicate": 0, "not_reactivated": 0, "pending": 0}

    def start(self) -> None:
        self.stamp = now()
        self.next_id = self.db.execute(
            "SELECT coalesce(max(id), 0) + 1 FROM subscribers"
        ).fetchone()[0]

    def add(self, line: int, row: list[str]) -> str | None:
        """Queue one row; return why it is rejected, or None."""
        if len(row) < self.width:
            row = row + [""] * (self.width - len(row))
        if "\x00" in "".join(row):
            return "contains a NUL byte"
        raw = row[self.email_i]
        try:
            address = normalize_address(raw)
        except InputError as e:
            return f"invalid address {raw.strip()!r}: {e}" if raw.strip() else "no address"
        if self.name_is:
            name = " ".join(v for i in self.name_is if (v := row[i].strip())) or None
            if name is not None and len(name) > MAX_NAME:
                return f"{'/'.join(self.names.values())} is longer than {MAX_NAME} characters"
        else:
            name = None
        fields = None
        if self.extras:
            parts = []
            for i, col, encoded in self.extras:
                value = row[i]
                if value:
                    if len(value) > MAX_FIELD:
                        size = f"{len(value) // 1024} KB (limit {MAX_FIELD // 1024} KB)"
                        return f"field {col!r} is {size}"
                    parts.append(f"{encoded}:{_json_str(value)}")
            if parts:
                fields = "{" + ",".join(parts) + "}"
        status = self.status(row)
        if status == PENDING:
            self.skipped["pending"] += 1
            return None
        key = address.casefold()
        if key in self.chunk:
            self.skipped["duplicate"] += 1
            return None
        self.chunk[key] = (
            address,
            name,
            fields,
            status,
            *[row[i] or None if i is not None else None for i in self.evidence],
        )
        if len(self.chunk) >= CHUNK:
            self.flush()
        return None

    def flush(self) -> None:
        chunk, self.chunk = self.chunk, {}
        if not chunk:
            return
        db, stamp, list_id = self.db, self.stamp, self.list_id
        keys = json.dumps(list(chunk))
        existing = {
            key: (sid, updated)
            for key, sid, updated in db.execute(
                """SELECT key, id, updated FROM subscribers
                   WHERE key IN (SELECT value FROM json_each(?))""",
                [keys],
            )
        }
        suppressed = {
            key
            for (key,) in db.execute(
                "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?))",
                [keys],
            )
        }
        member = (
            dict(
                db.execute(
                    """SELECT subscriber_id, status FROM memberships WHERE list_id = ?
                       AND subscriber_id IN (SELECT value FROM json_each(?))""",
                    [list_id, json.dumps([sid for sid, _ in existing.values()])],
                ).fetchall()
            )
            if existing
            else {}
        )
        new_subs, upd_subs, new_members, status_members, new_supp = [], [], [], [], []
        for key, (address, name, fields, status, c_at, cf_at, c_ip, cf_ip) in chunk.items():
            found = existing.get(key)
            if found is not None and found[1] == stamp:
                self.skipped["duplicate"] += 1  # seen earlier in this file
                continue
            if found is None:
                sid = self.next_id
                self.next_id += 1
                new_subs.append(
                    (sid, address, key, name, fields or "{}", stamp, stamp, self.source)
                )
            else:
                sid = found[0]
                upd_subs.append((name, fields or "{}", stamp, sid))
            current = member.get(sid)
            if status != ACTIVE:
                new_supp.append((key, address, status, stamp, self.source))
                self.suppressed += 1
                mstatus = MEMBER_STATUS[status]
                if current is None:
                    new_members.append(
                        (list_id, sid, mstatus, stamp, c_at, self.source, c_ip, cf_at, cf_ip, stamp)
                    )
                elif current == "active":
                    status_members.append((mstatus, stamp, stamp, list_id, sid))
                continue
            if key in suppressed or (current is not None and current != "active"):
                self.skipped["not_reactivated"] += 1
                if current is None:
                    new_members.append(
                        (
                            list_id,
                            sid,
                            "unsubscribed",
                            stamp,
                            c_at,
                            self.source,
                            c_ip,
                            cf_at,
                            cf_ip,
                            stamp,
                        )
                    )
                continue
            if current is None:
                new_members.append(
                    (list_id, sid, "active", stamp, c_at, self.source, c_ip, cf_at, cf_ip, None)
                )
            if found is None:
                self.imported += 1
            else:
                self.updated += 1
        conn = db.conn
        conn.executemany(
            """INSERT INTO subscribers (id, email, key, name, fields, created, updated, source)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            new_subs,
        )
        conn.executemany(
            """UPDATE subscribers SET name = coalesce(?, name), fields = json_patch(fields, ?),
               updated = ? WHERE id = ?""",
            upd_subs,
        )
        conn.executemany(
            """INSERT INTO memberships (list_id, subscriber_id, status, created, consent_at,
               consent_method, consent_source, consent_ip, confirmed_at, confirm_ip, status_at)
               VALUES (?, ?, ?, ?, ?, 'import', ?, ?, ?, ?, ?)""",
            new_members,
        )
        conn.executemany(
            """UPDATE memberships SET status = ?, status_at = ?, updated = ?,
               status_reason = 'import' WHERE list_id = ? AND subscriber_id = ?""",
            status_members,
        )
        conn.executemany(
            """INSERT INTO suppressions (key, email, reason, created, source)
               VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
            new_supp,
        )
