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
import re
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from listkit.config import Settings
from listkit.errors import ConfigError, InputError, ListkitError

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
# IMAP settings

IMAP_SCHEMES = {"imaps": ("tls", 993), "imap+starttls": ("starttls", 143)}


@dataclass(frozen=True)
class IMAPSettings:
    """A parsed ``LISTKIT_IMAP_URL``."""

    host: str
    port: int
    tls: str  # "tls" (implicit) or "starttls"
    username: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"
    timeout: float = 60.0
    ca_file: str | None = None

    def masked(self) -> str:
        scheme = {v[0]: k for k, v in IMAP_SCHEMES.items()}[self.tls]
        return f"{scheme}://{self.username}:****@{self.host}:{self.port}/{self.mailbox}"


def parse_imap_url(url: str) -> IMAPSettings:
    """``imaps://user:pass@host:993/INBOX`` or ``imap+starttls://user:pass@host:143/INBOX``.

    User and password are percent-decoded; ``@``, ``/`` and ``:`` in them must be
    percent-encoded. The password never appears in an error.
    """
    where = "LISTKIT_IMAP_URL"
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in IMAP_SCHEMES:
        shown = f"{scheme}://" if sep else "a URL without a scheme"
        raise ConfigError(
            f"{where} must start with imaps:// or imap+starttls://, not {shown} "
            "(plain imap:// would send the password unencrypted)"
        )
    authority, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        raise ConfigError(f"{where} has no user and password: imaps://user:pass@host/INBOX")
    # A raw '@' after the first '/' means a '/' in the password: never guess where it ends
    # (a mailbox name with '@' is percent-encoded too).
    if "@" in path_query or "@" in userinfo or userinfo.count(":") != 1:
        raise ConfigError(
            f"{where}: the user and password must be 'user:pass', with @ / : in them "
            "percent-encoded (%40 %2F %3A)"
        )
    user, _, password = userinfo.partition(":")
    if not user or not password:
        raise ConfigError(f"{where} needs both a user and a password")
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?", hostport)
    if m is None:
        raise ConfigError(f"{where} has a malformed host or port: {hostport!r}")
    tls, default_port = IMAP_SCHEMES[scheme]
    port = int(m.group(2)) if m.group(2) else default_port
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is out of range")
    timeout = 60.0
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key != "timeout":
            raise ConfigError(f"{where}: unknown option {key!r} (known: timeout)")
        try:
            timeout = float(value)
        except ValueError:
            raise ConfigError(f"{where}: timeout={value!r} is not a number") from None
        if not 0 < timeout < 86400:  # nan, inf or <= 0 would stop the socket with a traceback
            raise ConfigError(
                f"{where}: timeout={value!r} must be a number of seconds > 0 and below 86400"
            )
    return IMAPSettings(
        host=m.group(1).strip("[]"),
        port=port,
        tls=tls,
        username=unquote(user),
        password=unquote(password),
        mailbox=unquote(path) or "INBOX",
        timeout=timeout,
    )


def imap_settings(settings) -> IMAPSettings:
    """The workspace's IMAP settings, checked (URL, CA file)."""
    settings.require("LISTKIT_IMAP_URL")
    imap = parse_imap_url(settings.imap_url)
    path = settings.imap_ca
    if path:
        if not path.is_file():
            raise ConfigError(f"LISTKIT_IMAP_CA: no file {path}")
        imap = IMAPSettings(**{**imap.__dict__, "ca_file": str(path)})
    return imap


def done_action(value: str | None) -> str | None:
    """``LISTKIT_IMAP_DONE``: None to delete, or the folder to move to."""
    value = (value or Settings.imap_done.default).strip()
    if value == "delete":
        return None
    if value.startswith("move:") and value[5:].strip():
        return value[5:].strip()
    raise ConfigError(f"LISTKIT_IMAP_DONE must be delete or move:FOLDER, not {value!r}")


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
