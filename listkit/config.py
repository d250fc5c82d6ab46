"""Settings: read from the environment and the workspace's ``.env``.

The rule: each setting is declared once, as a ``Setting`` of ``Settings``
(its variable, type, default, whether it is secret, its one-line doc), and
read only through it: no default is restated elsewhere, and the docs' table
is generated from the declarations. A variable already in the environment
wins over ``.env``; a setting is only checked when a command reads it, and
then a missing or malformed one is named in the error (``LISTKIT_SMTP_URL
...``) with what it should be. Secrets are never printed, not even by repr.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import ClassVar, Generic, TypeVar, overload
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from listkit.domains import ascii_host
from listkit.errors import ConfigError, InputError
from listkit.times import LONGEST, format_duration, parse_duration

T = TypeVar("T")

# A domain name as DKIM's d= and s= take it: dot-separated labels of letters, digits
# and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

# An envelope sender's address for VERP: no '+' (the token goes after one) and no control
# character (SMTP refuses it in MAIL FROM, and every message would fail).
_BOUNCE_ADDRESS = re.compile(
    r"([^@\s+<>\x00-\x1f\x7f]+)@([^@\s<>\x00-\x1f\x7f]+\.[^@\s<>\x00-\x1f\x7f]+)"
)

# A host name (letters, digits, hyphens, dots) or an address literal.
_EHLO_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]"
)

SMTP_SCHEMES = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


@dataclass(frozen=True)
class SMTPSettings:
    """A parsed ``LISTKIT_SMTP_URL``."""

    host: str
    port: int
    tls: str  # "plain", "starttls" or "tls" (implicit)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ca_file: str | None = None
    insecure_auth: bool = False  # the URL allows AUTH without TLS to a remote host
    ehlo_name: str | None = None

    def masked(self) -> str:
        scheme = {v[0]: k for k, v in SMTP_SCHEMES.items()}[self.tls]
        auth = f"{self.username}:****@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


_ENCODE_HINT = (
    "percent-encode these characters in the user name and password: "
    "@ as %40, / as %2F, : as %3A, ? as %3F, # as %23, % as %25"
)
_OPTIONS = ("timeout", "insecure_auth")


def parse_smtp_url(url: str) -> SMTPSettings:
    """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs.

    The user name and password must be percent-encoded: an ``@``, ``/``,
    ``?`` or ``#`` left as it is would move the boundary between them and
    the host, so it is refused rather than guessed. No error shows the
    password.
    """
    where = "LISTKIT_SMTP_URL"
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SMTP_SCHEMES:
        raise ConfigError(
            f"{where} must start with smtp://, smtp+starttls:// or smtps://, "
            f"not {scheme + '://' if sep and scheme else repr(mask_url(url))}"
        )
    userinfo, at, hostpart = rest.rpartition("@")
    if at and any(c in userinfo for c in "@/?#"):
        raise ConfigError(
            f"{where} is malformed: its user name or password contains @, /, ? or #; "
            f"{_ENCODE_HINT} ({mask_url(url)})"
        )
    if "#" in hostpart:
        raise ConfigError(f"{where} is malformed: it contains #; {_ENCODE_HINT}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        # urllib quotes a bad port ("... as 'X'"): with the host left out, X is the password.
        reason = re.sub(r" as '.*'$", "", str(e))
        raise ConfigError(f"{where} is malformed ({reason}): {mask_url(url)}") from None
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"{where} is malformed: nothing may follow the host and port but ?options; "
            f"if a / belongs to the password, {_ENCODE_HINT} ({mask_url(url)})"
        )
    if not parts.hostname:
        raise ConfigError(f"{where} has no host: {mask_url(url)}")
    if at and ":" not in userinfo:
        raise ConfigError(
            f"{where} has a user name but no password: write user:password@host ({_ENCODE_HINT})"
        )
    tls, default_port = SMTP_SCHEMES[parts.scheme]
    timeout = 30.0
    insecure_auth = False
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigError(f"{where}: timeout={value!r} is not a number") from None
            if not 0 < timeout < 86400:
                raise ConfigError(f"{where}: timeout={value!r} must be a number of seconds > 0")
        elif key == "insecure_auth":
            if value not in ("0", "1"):
                raise ConfigError(f"{where}: insecure_auth={value!r} must be 0 or 1")
            insecure_auth = value == "1"
        else:
            raise ConfigError(f"{where}: unknown option {key!r} (known: {', '.join(_OPTIONS)})")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    host = parts.hostname
    if username and tls == "plain" and not insecure_auth and not is_loopback(host):
        raise ConfigError(
            f"{where}: smtp:// would send the password for {username!r} unencrypted to "
            f"{host}: use smtp+starttls:// (port 587) or smtps:// (port 465), or add "
            "?insecure_auth=1 if the network to it is trusted"
        )
    return SMTPSettings(
        host=host,
        port=port or default_port,
        tls=tls,
        username=username,
        password=password,
        timeout=timeout,
        insecure_auth=insecure_auth,
    )


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


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves the machine."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """The URL with its password hidden, however malformed the URL is.

    Everything up to the last ``@`` is credentials (a password may hold an
    unencoded ``@`` or ``/``); only a user name that is surely one is shown.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return "****" if "@" in url or ":" in url else url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return f"{scheme}://{_mask_hostless(rest)}"
    user, colon, _password = userinfo.partition(":")
    if not colon or any(c in user for c in "@/?#"):
        return f"{scheme}://****@{hostpart}"
    return f"{scheme}://{user}:****@{hostpart}"


def _mask_hostless(rest: str) -> str:
    """What follows ``scheme://`` in a URL without ``@``: ``host:port`` stays, but
    ``user:password`` (the host forgotten) must not, so anything after a colon
    that is not a port is hidden."""
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if netloc.endswith("]"):  # [IPv6] without a port
        return rest
    _host, colon, port = netloc.rpartition(":")
    if colon and not port.isdigit():
        return "****"
    return rest


def mask_imap_url(url: str) -> str:
    """Hide the password of an IMAP URL, even one with a raw '@' or '/' in it: everything
    between the user and the last '@' goes."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "****" if "@" in url or ":" in url else url
    if "@" not in rest:
        return f"{scheme}://{_mask_hostless(rest)}"
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0].split("/", 1)[0]
    return f"{scheme}://{user}:****@{host}"


def parse_sender(value: str) -> tuple[str, str]:
    """``Name <addr>`` or ``addr`` -> (name, addr); raises ConfigError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError("LISTKIT_FROM contains control characters")
    name, addr = parseaddr(value.strip())
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ConfigError(f"LISTKIT_FROM must look like 'Name <you@example.com>', not {value!r}")
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        # Only SMTPUTF8 carries it, and the From line of every message would need it.
        raise ConfigError(
            f"LISTKIT_FROM: the address {addr} has a non-ASCII local part, which most mail "
            "servers cannot carry; use an ASCII address such as you@example.com"
        )
    host = ascii_host(domain)
    if host is None:
        raise ConfigError(f"LISTKIT_FROM: {domain!r} is not a valid domain name")
    return name, f"{local}@{host}"


class Invalid(ValueError):
    """A value a setting's kind refuses; the message says what it should be
    ("must be yes or no"), and the setting's name and value are added to it."""


@dataclass(frozen=True)
class Kind(Generic[T]):
    """A setting's type: what the docs call it, and how its text becomes a value."""

    label: str
    parse: Callable[[str, Path], T]  # (text, workspace) -> value; raises Invalid

    def read(self, text: str, where: str, workspace: Path = Path(), secret: bool = False) -> T:
        """``text`` as this kind's value; a ConfigError naming ``where`` (a setting, an
        option) and what it should be, quoting the text unless it is a ``secret``."""
        try:
            return self.parse(text, workspace)
        except Invalid as e:
            shown = "" if secret else f", not {text.strip()!r}"
            raise ConfigError(f"{where} {e}{shown}") from None


def _text(text: str, _workspace: Path) -> str:
    return text.strip()


def _file(text: str, workspace: Path) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else workspace / path


def _yes_no(text: str, _workspace: Path) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise Invalid("must be yes or no")


def _whole_number(what: str) -> Callable[[str, Path], int]:
    """A parser of a whole number, 1 or more; ``what`` says what it counts."""

    def parse(text: str, _workspace: Path) -> int:
        value = text.strip()
        if not value.isdigit() or int(value) < 1:
            raise Invalid(f"must be a whole number of {what}")
        return int(value)

    return parse


def _http_url(text: str, _workspace: Path) -> str:
    url = text.strip()
    if re.search(r"[\x00-\x20\x7f]", url):
        # It is in every message's List-Unsubscribe header.
        raise Invalid("must be a URL without spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid("must be an http(s) URL")
    return url


def _host_name(text: str, _workspace: Path) -> str:
    name = text.strip()
    if not _EHLO_NAME.fullmatch(name):
        raise Invalid(
            "must be a host name like mail.example.com (or an address literal like [192.0.2.1])"
        )
    return name


def _domain_name(text: str, _workspace: Path) -> str:
    value = text.strip().rstrip(".")
    if not _DNS_NAME.fullmatch(value):
        raise Invalid("must be a domain name like example.com")
    return value.lower()


def _dkim_selector(text: str, _workspace: Path) -> str:
    value = text.strip()
    if not _DNS_NAME.fullmatch(value):
        raise Invalid("must be letters, digits and dashes (e.g. listkit2611)")
    return value


@dataclass(frozen=True)
class SoftRule:
    """``LISTKIT_SOFT_BOUNCES``: ``count`` soft bounces within ``days`` suppress an address."""

    count: int
    days: int


def _soft_rule(text: str, _workspace: Path) -> SoftRule:
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise Invalid("must be N/DAYS such as 3/30 (3 soft bounces in 30 days)")
    return SoftRule(int(m.group(1)), int(m.group(2)))


def _imap_done(text: str, _workspace: Path) -> str | None:
    """None to delete a message once understood, or the folder to move it to."""
    value = text.strip()
    if value == "delete":
        return None
    if value.startswith("move:") and value[5:].strip():
        return value[5:].strip()
    raise Invalid("must be delete or move:FOLDER")


def _bounce_address(text: str, _workspace: Path) -> str | None:
    """An address without '+' (its domain in lower-case A-labels), or None when blank."""
    value = text.strip()
    if not value:
        return None
    m = _BOUNCE_ADDRESS.fullmatch(value)
    host = ascii_host(m.group(2)) if m is not None else None
    if m is None or not m.group(1).isascii() or host is None:
        raise Invalid("must be a plain address without '+', such as bounces@example.com")
    return f"{m.group(1)}@{host.lower()}"


def _dns_server(text: str, _workspace: Path) -> tuple[str, int]:
    """``SERVER[:PORT]`` (``[v6]:port`` for IPv6) -> (address, port)."""
    value = text.strip()
    m = re.fullmatch(
        r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?|([0-9A-Fa-f:]+)", value
    )
    if not m:
        raise Invalid("must be SERVER[:PORT]")
    host = m.group(1) or m.group(3) or m.group(5)
    port = int(m.group(2) or m.group(4) or 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(
            "must be the IP address of a DNS server (e.g. 1.1.1.1 or 127.0.0.1:5353)"
        ) from None
    if not 0 < port < 65536:
        raise Invalid(f"has a port out of range ({port})")
    return host, port


def _signing_key(text: str, _workspace: Path) -> str:
    if len(text) < 16:
        raise Invalid("is too short: use at least 16 random characters")
    return text


def _duration(text: str, _workspace: Path) -> timedelta:
    try:
        value = parse_duration(text, "")
    except InputError:
        value = None
    if not value:  # none, or 0 (unset is how to say none)
        raise Invalid(f"must be a duration such as 7d, 36h or 1d12h, at most {LONGEST.days}d")
    return value


@dataclass(frozen=True)
class Frequency:
    """At most ``count`` messages in any ``window`` (``LISTKIT_FREQUENCY``)."""

    count: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.window)}"


def _frequency(text: str, workspace: Path) -> Frequency:
    count, slash, window = text.strip().partition("/")
    form = "must be a number of messages per duration, such as 1/24h or 3/7d"
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise Invalid(form)
    try:
        return Frequency(int(count), _duration(window, workspace))
    except Invalid:
        raise Invalid(form) from None


TEXT = Kind("text", _text)
FILE = Kind("file", _file)
YES_NO = Kind("yes/no", _yes_no)
COUNT = Kind("whole number", _whole_number("messages"))
PER_HOUR = Kind(
    "whole number, 1 or more", _whole_number("confirmations an hour per list (1 or more)")
)
RENDER_WORKERS = Kind("whole number, 1 or more", _whole_number("processes (1 or more)"))
HTTP_URL = Kind("http(s) URL", _http_url)
HOST_NAME = Kind("host name", _host_name)
SENDER = Kind("`Name <address>`", lambda text, _workspace: parse_sender(text))
SMTP_URL = Kind("SMTP URL", lambda text, _workspace: parse_smtp_url(text))
SIGNING_KEY = Kind("text, 16+ characters", _signing_key)
DURATION = Kind("duration (`7d`, `36h`)", _duration)
FREQUENCY = Kind("`N/DURATION` (`1/24h`)", _frequency)
DOMAIN_NAME = Kind("domain name", _domain_name)
DKIM_SELECTOR = Kind("selector (letters, digits, dashes)", _dkim_selector)
SOFT_BOUNCES = Kind("`N/DAYS`", _soft_rule)
IMAP_URL = Kind("IMAP URL", lambda text, _workspace: parse_imap_url(text))
IMAP_DONE = Kind("`delete` or `move:FOLDER`", _imap_done)
BOUNCE_ADDRESS = Kind("address", _bounce_address)
DNS_SERVER = Kind("`SERVER[:PORT]`", _dns_server)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting, declared once: its variable, type, default and doc.

    As a class attribute of ``Settings`` it reads as the typed value
    (``settings.silent_after`` is an int), checked when it is read: a
    malformed value is a ConfigError naming the setting and what it should
    be, and quoting the value unless the setting is a secret.
    """

    name: str
    kind: Kind[T]
    doc: str  # one line of Markdown: the docs' table (scripts/docs.py) shows it
    default: str | None = None
    default_doc: str | None = None  # the docs' words for the default, when a value does not say it
    secret: bool = False
    mask: Callable[[str], str] | None = None  # how `listkit config` shows a value that is no secret
    attr: str = field(init=False, default="")  # its name on Settings, set when declared there

    def __set_name__(self, owner: type, attr: str) -> None:
        object.__setattr__(self, "attr", attr)
        owner.declared = {**getattr(owner, "declared", {}), self.name: self}

    @overload
    def __get__(self, settings: None, owner: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, settings: Settings, owner: type | None = None) -> T | None: ...
    def __get__(self, settings, owner=None):
        if settings is None:
            return self
        text = settings.raw[self.name]
        if text is None:
            return None
        return self.kind.read(text, self.name, settings.workspace, self.secret)

    def parsed_default(self) -> T | None:
        """The default as a value (``settings.<attr>`` when nothing sets it)."""
        return None if self.default is None else self.kind.parse(self.default, Path())

    def shown(self, text: str | None) -> str | None:
        """The value as `listkit config` shows it: a secret masked."""
        if not text:
            return text
        if self.secret:
            return "****"
        return self.mask(text) if self.mask else text


@dataclass(frozen=True)
class Settings:
    """The effective settings of one workspace, each read through its declaration.

    ``raw`` holds the text as read (or the default); ``sources`` says where
    each came from. Neither is shown by ``repr``, which would print secrets.
    """

    workspace: Path
    raw: Mapping[str, str | None] = field(repr=False)
    sources: Mapping[str, str] = field(repr=False)

    declared: ClassVar[dict[str, Setting]]

    db = Setting(
        "LISTKIT_DB", FILE, "SQLite database file, relative to the workspace", "listkit.db"
    )
    smtp_url = Setting(
        "LISTKIT_SMTP_URL",
        SMTP_URL,
        "`smtp://host:port` (plain), `smtp+starttls://user:pass@host:587`, "
        "`smtps://user:pass@host:465`; options `?timeout=SECONDS` (default 30), "
        "`&insecure_auth=1` (percent-encode `@ / : ? # %` in the user name and password)",
        mask=mask_url,
    )
    smtp_ca = Setting(
        "LISTKIT_SMTP_CA",
        FILE,
        "PEM file of a private CA to trust for the SMTP server",
        default_doc="system CAs",
    )
    ehlo_name = Setting(
        "LISTKIT_EHLO_NAME",
        HOST_NAME,
        "the name listkit gives the server in EHLO, e.g. `mail.example.com`",
        default_doc="this machine's full name if it has a dot; else the domain of `LISTKIT_FROM`",
    )
    render_workers = Setting(
        "LISTKIT_RENDER_WORKERS",
        RENDER_WORKERS,
        "processes that render and DKIM-sign a send of 1,000 messages or more, beside the one "
        "that sends",
        default_doc=(
            "one per core for a DKIM-signed send, one per core but one for an unsigned send "
            "(none on a single core: rendering stays in the sending process)"
        ),
    )
    sender = Setting(
        "LISTKIT_FROM",
        SENDER,
        "sender, `Name <address>`; the address's local part must be ASCII "
        "(its domain may be international, and is used in its UTS 46 ASCII form: "
        "`straße.de` is `xn--strae-oqa.de`, never `strasse.de`)",
    )
    postal_address = Setting(
        "LISTKIT_POSTAL_ADDRESS", TEXT, "your postal address, shown in every message"
    )
    base_url = Setting(
        "LISTKIT_BASE_URL",
        HTTP_URL,
        "public URL of `listkit serve` (behind your TLS proxy): unsubscribe, click and "
        "confirmation links point there (http or https, no spaces)",
    )
    site_url = Setting(
        "LISTKIT_SITE_URL",
        HTTP_URL,
        "your site or blog (http or https): the reader's pages (unsubscribe, broken link) "
        "link back to it",
        default_doc="the site of `LISTKIT_BASE_URL` (`https://example.com/`)",
    )
    secret = Setting(
        "LISTKIT_SECRET",
        SIGNING_KEY,
        "signs unsubscribe, click and confirmation links, and makes each delivery's token: "
        "changing it breaks the links and personal coupons of mail already sent",
        default_doc="random, from `listkit init`",
        secret=True,
    )
    stripe_webhook_secret = Setting(
        "LISTKIT_STRIPE_WEBHOOK_SECRET",
        TEXT,
        "Stripe endpoint signing secret(s) (`whsec_...`) for `/hooks/stripe`; several, "
        "comma-separated, while rotating",
        default_doc="none (route off)",
        secret=True,
    )
    lemonsqueezy_secret = Setting(
        "LISTKIT_LEMONSQUEEZY_SECRET",
        TEXT,
        "Lemon Squeezy webhook signing secret for `/hooks/lemonsqueezy`",
        default_doc="none (route off)",
        secret=True,
    )
    gumroad_secret = Setting(
        "LISTKIT_GUMROAD_SECRET",
        TEXT,
        "the secret last path segment of the Gumroad ping URL `/hooks/gumroad/<secret>`",
        default_doc="none (route off)",
        secret=True,
    )
    webhook_secret = Setting(
        "LISTKIT_WEBHOOK_SECRET",
        TEXT,
        "key that signs sales posted to `/hooks/sale`",
        default_doc="none (route off)",
        secret=True,
    )
    track_clicks = Setting(
        "LISTKIT_TRACK_CLICKS",
        YES_NO,
        "`yes`: a campaign's `buy_url` and `track()` links go through "
        "`LISTKIT_BASE_URL/c/...`, which counts the click and redirects; "
        "`no`: links go straight to the shop",
        "yes",
    )
    token_param = Setting(
        "LISTKIT_TOKEN_PARAM", TEXT, "URL parameter carrying a delivery's token", "lk"
    )
    dkim_key = Setting(
        "LISTKIT_DKIM_KEY",
        FILE,
        "DKIM private key file (PEM, mode 600, relative to the workspace); set, every "
        "message is signed",
        default_doc="none: unsigned",
    )
    dkim_selector = Setting(
        "LISTKIT_DKIM_SELECTOR",
        DKIM_SELECTOR,
        "DKIM selector: the public key is published at `SELECTOR._domainkey.DOMAIN`",
        default_doc="none (needed with the key)",
    )
    dkim_domain = Setting(
        "LISTKIT_DKIM_DOMAIN",
        DOMAIN_NAME,
        "DKIM signing domain (`d=`)",
        default_doc="the domain of `LISTKIT_FROM`",
    )
    dns = Setting(
        "LISTKIT_DNS",
        DNS_SERVER,
        "DNS server `listkit doctor` asks, `SERVER[:PORT]` (`[::1]:53` for IPv6)",
        default_doc="the system's resolvers",
    )
    bounce_address = Setting(
        "LISTKIT_BOUNCE_ADDRESS",
        BOUNCE_ADDRESS,
        "envelope sender for bounces (VERP): `bounces@example.com` sends each message as "
        "`bounces+<token>@example.com` (an international domain in its UTS 46 ASCII form)",
        default_doc="none: the `LISTKIT_FROM` address",
    )
    imap_url = Setting(
        "LISTKIT_IMAP_URL",
        IMAP_URL,
        "mailbox `listkit bounces fetch` reads: `imaps://user:pass@host:993/INBOX` or "
        "`imap+starttls://user:pass@host:143/INBOX` (percent-encode `@ / :` in the user and "
        "password); option `?timeout=SECONDS` (default 60, below 86400)",
        mask=mask_imap_url,
    )
    imap_ca = Setting(
        "LISTKIT_IMAP_CA",
        FILE,
        "PEM file of a private CA to trust for the IMAP server",
        default_doc="system CAs",
    )
    imap_done = Setting(
        "LISTKIT_IMAP_DONE",
        IMAP_DONE,
        "what `bounces fetch` does with a message it understood: `delete`, or `move:FOLDER`",
        "delete",
    )
    ses_topic_arn = Setting(
        "LISTKIT_SES_TOPIC_ARN",
        TEXT,
        "SNS topic ARN(s), comma-separated, whose SES notifications `POST /relays/ses` accepts",
        default_doc="none: no endpoint",
    )
    postmark_webhook_auth = Setting(
        "LISTKIT_POSTMARK_WEBHOOK_AUTH",
        TEXT,
        "`user:password` of the Postmark webhook URL (Basic auth)",
        default_doc="none: no endpoint",
        secret=True,
    )
    mailgun_signing_key = Setting(
        "LISTKIT_MAILGUN_SIGNING_KEY",
        TEXT,
        "Mailgun's HTTP webhook signing key",
        default_doc="none: no endpoint",
        secret=True,
    )
    soft_bounces = Setting(
        "LISTKIT_SOFT_BOUNCES",
        SOFT_BOUNCES,
        "`N/DAYS`: this many soft bounces of an address within DAYS days suppress it",
        "3/30",
    )
    silent_after = Setting(
        "LISTKIT_SILENT_AFTER",
        COUNT,
        "messages sent, with no purchase and no click, that make a subscriber silent",
        "5",
    )
    confirm_per_hour = Setting(
        "LISTKIT_CONFIRM_PER_HOUR",
        PER_HOUR,
        "signup confirmations `listkit serve` mails per list in an hour, at the most",
        "100",
    )
    quiet_after_purchase = Setting(
        "LISTKIT_QUIET_AFTER_PURCHASE",
        DURATION,
        "no selling message to a reader for this long after their last purchase (e.g. `7d`); "
        "what it holds back waits, or is skipped at its deadline "
        "([selling.md](selling.md#respect-for-the-reader))",
        default_doc="none: off",
    )
    frequency = Setting(
        "LISTKIT_FREQUENCY",
        FREQUENCY,
        "at most N selling messages to a reader in any DURATION (e.g. `1/24h`, `3/7d`); "
        "what it holds back waits, or is skipped at its deadline",
        default_doc="none: off",
    )

    @property
    def db_path(self) -> Path:
        return self.db

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every missing setting among ``names``."""
        missing = [n for n in names if not self.raw[n]]
        if missing:
            listed = ", ".join(missing)
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigError(
                f"{listed} {verb} not set: add {'it' if len(missing) == 1 else 'them'} to "
                f"{self.workspace / '.env'} or the environment (see `listkit config`)"
            )

    def smtp(self) -> SMTPSettings:
        self.require("LISTKIT_SMTP_URL")
        ca_file = _ca_file("LISTKIT_SMTP_CA", self.smtp_ca)
        return replace(self.smtp_url, ehlo_name=self.ehlo_hostname(), ca_file=ca_file)

    def imap(self) -> IMAPSettings:
        """LISTKIT_IMAP_URL, with LISTKIT_IMAP_CA's file when that is set."""
        self.require("LISTKIT_IMAP_URL")
        return replace(self.imap_url, ca_file=_ca_file("LISTKIT_IMAP_CA", self.imap_ca))

    def ehlo_hostname(self) -> str:
        """LISTKIT_EHLO_NAME, else this machine's full name, else the From domain.

        Receiving servers check the EHLO name: ``localhost`` or a bare host
        name reads as a misconfigured or compromised client.
        """
        name = self.ehlo_name
        if name:
            return name
        fqdn = _fqdn()
        if "." in fqdn and _EHLO_NAME.fullmatch(fqdn) and not fqdn.startswith("localhost"):
            return fqdn
        with contextlib.suppress(ConfigError):
            if self.sender:
                domain = self.sender[1].rpartition("@")[2]  # in A-labels (parse_sender)
                if _EHLO_NAME.fullmatch(domain):
                    return domain
        return fqdn if _EHLO_NAME.fullmatch(fqdn) else "localhost"

    def sender_address(self) -> tuple[str, str]:
        self.require("LISTKIT_FROM")
        return self.sender

    def public_base_url(self) -> str:
        self.require("LISTKIT_BASE_URL")
        return self.base_url.rstrip("/")

    def reader_site_url(self) -> str | None:
        """Where the reader's pages lead back to: LISTKIT_SITE_URL, else the site
        (scheme and host) of LISTKIT_BASE_URL, else None."""
        if self.site_url:
            return self.site_url
        try:
            parts = urlsplit(self.public_base_url())
        except ConfigError:
            return None
        return f"{parts.scheme}://{parts.netloc}/"

    def secret_key(self) -> bytes:
        self.require("LISTKIT_SECRET")
        return self.secret.encode()

    def effective(self) -> list[dict[str, str | None]]:
        """Rows for `listkit config`: name, value (secrets masked), source, description."""
        return [
            {
                "name": name,
                "value": setting.shown(self.raw[name]),
                "source": self.sources[name],
                "description": setting.doc,
            }
            for name, setting in self.declared.items()
        ]


def _ca_file(name: str, path: Path | None) -> str | None:
    """The CA file setting ``name`` gives, which must exist; None when it is unset."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{name}: no file {path}")
    return str(path)


def read_env_file(env_file: Path) -> dict[str, str | None]:
    """The variables of a ``.env`` file; ConfigError if it cannot be read as UTF-8."""
    if not env_file.is_file():
        return {}
    data = env_file.read_bytes()
    if b"\x00" in data:  # no setting can hold one (nor can a path or an environment variable)
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise ConfigError(
            f"{env_file}, line {line}: a NUL byte (0x00); remove it, or save the file again "
            "as plain UTF-8 text"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{env_file}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8; "
            "save the file as UTF-8"
        ) from None
    return dotenv_values(stream=io.StringIO(text))


def load_settings(workspace: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of ``workspace``: environment first, then its ``.env``, then defaults.

    A variable set in the environment wins even when it is empty: ``VAR=``
    unsets what ``.env`` says (and the default applies).
    """
    environ = os.environ if environ is None else environ
    file_values = read_env_file(workspace / ".env")
    raw: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name, setting in Settings.declared.items():
        default = setting.default
        if name in environ:
            raw[name] = environ[name] or default
            sources[name] = "environment" if environ[name] else "environment (empty)"
        elif file_values.get(name):
            raw[name], sources[name] = file_values[name], ".env"
        else:
            raw[name], sources[name] = default, "default" if default else "unset"
    return Settings(workspace=workspace, raw=raw, sources=sources)


@functools.cache
def _fqdn() -> str:
    """This machine's full name, looked up once."""
    return socket.getfqdn()
