"""Mailboxes that bounces arrive in: .eml files, mbox, Maildir, and IMAP.

The rule for IMAP: what was learned from a message is committed before the
message is touched, and then only the messages understood are moved or
deleted; the rest stay exactly as they were (fetched with ``BODY.PEEK``, so
not even marked read). Which UIDs were handled is kept in the database with
the mailbox's UIDVALIDITY, so each run reads only new messages, and a run
killed after its commit finishes the moves or deletes on the next run.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

from listkit.config import IMAPSettings
from listkit.errors import InputError, ListkitError

# ---------------------------------------------------------------------------
# Files


def read_messages(path: str) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) of each message in a .eml file, an mbox file, a Maildir or a
    folder of .eml files; ``-`` reads one message from stdin."""
    if path == "-":
        yield "<stdin>", sys.stdin.buffer.read()
        return
    p = Path(path)
    if p.is_dir():
        if (p / "cur").is_dir() and (p / "new").is_dir():
            box = mailbox.Maildir(p, factory=None, create=False)
            for key in sorted(box.keys()):
                with box.get_file(key) as f:
                    yield f"{p.name}/{key}", f.read()
            return
        files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        if not files:
            raise InputError(f"{path}: no messages in this folder (.eml files or a Maildir)")
        for q in files:
            yield str(q.relative_to(p)), q.read_bytes()
        return
    if not p.is_file():
        raise InputError(f"{path}: no such file or folder")
    with p.open("rb") as f:
        head = f.read(5)
    if head == b"From ":
        box = mailbox.mbox(p, factory=None, create=False)
        try:
            for n, key in enumerate(box.keys(), 1):
                yield f"{p.name}#{n}", box.get_bytes(key, from_=False)
        finally:
            box.close()
        return
    yield p.name, p.read_bytes()


# ---------------------------------------------------------------------------
# IMAP client


class IMAPError(ListkitError):
    """The IMAP server refused or failed; the message names the server, never the password."""


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IMAPMailbox:
    """One selected IMAP mailbox, with the few commands bounce intake needs."""

    def __init__(self, settings: IMAPSettings):
        self.settings = settings
        self.conn: imaplib.IMAP4 | None = None
        self.uidvalidity = 0

    def _fail(self, what: str, e: BaseException) -> IMAPError:
        detail = str(e).replace(self.settings.password, "****") if self.settings.password else e
        return IMAPError(f"IMAP {self.settings.masked()}: {what}: {detail}")

    def open(self) -> IMAPMailbox:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file)
        try:
            if s.tls == "tls":
                self.conn = imaplib.IMAP4_SSL(
                    s.host, s.port, ssl_context=context, timeout=s.timeout
                )
            else:
                self.conn = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
                self.conn.starttls(ssl_context=context)
        except ssl.SSLError as e:
            raise self._fail("TLS failed (set LISTKIT_IMAP_CA for a private CA)", e) from None
        except (OSError, imaplib.IMAP4.error) as e:
            raise self._fail("cannot connect", e) from None
        try:
            self.conn.login(s.username, s.password)
        except imaplib.IMAP4.error as e:
            raise self._fail("login refused", e) from None
        except OSError as e:
            raise self._fail("connection lost", e) from None
        # Servers announce more after login (Dovecot: MOVE, UIDPLUS) than in their greeting,
        # and imaplib keeps the greeting's list: ask again.
        try:
            typ, data = self.conn.capability()
            if typ == "OK" and data and data[0]:
                self.conn.capabilities = tuple(data[0].decode("ascii", "replace").upper().split())
            typ, data = self.conn.select(_quote(s.mailbox))
        except (imaplib.IMAP4.error, OSError) as e:
            raise self._fail("cannot open the mailbox", e) from None
        if typ != "OK":
            raise IMAPError(f"IMAP {s.masked()}: cannot open mailbox {s.mailbox!r}: {data}")
        _, values = self.conn.response("UIDVALIDITY")
        try:
            self.uidvalidity = int(values[0])
        except (TypeError, ValueError, IndexError):
            raise IMAPError(f"IMAP {s.masked()}: the server gave no UIDVALIDITY") from None
        return self

    def _uid(self, *args) -> list:
        assert self.conn is not None
        try:
            typ, data = self.conn.uid(*args)
        except (imaplib.IMAP4.error, OSError) as e:
            raise self._fail(f"UID {args[0]} failed", e) from None
        if typ != "OK":
            raise IMAPError(f"IMAP {self.settings.masked()}: UID {args[0]} refused: {data}")
        return data

    def uids_after(self, last_uid: int) -> list[int]:
        data = self._uid("SEARCH", None, f"UID {last_uid + 1}:*")
        uids = [int(u) for u in b" ".join(d for d in data if d).split()]
        return sorted(u for u in uids if u > last_uid)  # n:* always names the last message

    def fetch(self, uid: int) -> bytes | None:
        for item in self._uid("FETCH", str(uid), "(BODY.PEEK[])"):
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        return None

    def has(self, capability: str) -> bool:
        assert self.conn is not None
        return capability.upper() in self.conn.capabilities

    def remove(self, uids: list[int], move_to: str | None) -> str:
        """Move or delete exactly ``uids``; says what was done."""
        if not uids:
            return "nothing to remove"
        uid_set = ",".join(str(u) for u in uids)
        if move_to is not None:
            assert self.conn is not None
            # Create the folder the first time; "already exists" is a NO we can ignore.
            with contextlib.suppress(imaplib.IMAP4.error):
                self.conn.create(_quote(move_to))
        if move_to is not None and self.has("MOVE"):
            self._uid("MOVE", uid_set, _quote(move_to))
            return f"moved to {move_to}"
        if move_to is not None:
            self._uid("COPY", uid_set, _quote(move_to))
        self._uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if self.has("UIDPLUS"):
            self._uid("EXPUNGE", uid_set)
            return f"moved to {move_to}" if move_to else "deleted"
        # A plain EXPUNGE would also remove other messages someone flagged: leave it.
        return "flagged \\Deleted (the server has no UIDPLUS to expunge only these)"

    def close(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.conn.logout()
        self.conn = None
