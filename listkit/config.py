"""Settings: read from the environment and the workspace's ``.env``.

The rule: a variable already in the environment wins over ``.env``; a setting
is only checked when a command needs it, and then a missing or malformed one
is named in the error (``LISTKIT_SMTP_URL ...``). Secrets are never printed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from listkit.domains import ascii_host
from listkit.errors import ConfigError

# A host name (letters, digits, hyphens, dots) or an address literal.
_EHLO_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]"
)

# name -> (attribute, default, description, secret)
SETTINGS: dict[str, tuple[str, str | None, str, bool]] = {
    "LISTKIT_DB": ("db", "listkit.db", "SQLite database file (relative to the workspace)", False),
    "LISTKIT_SMTP_URL": (
        "smtp_url",
        None,
        "smtp://host:port, smtp+starttls://user:pass@host:587 or smtps://user:pass@host:465"
        " (percent-encode @ / : ? # % in the user name and password)",
        False,
    ),
    "LISTKIT_SMTP_CA": (
        "smtp_ca",
        None,
        "CA bundle (PEM file) to trust for a server with a private certificate",
        False,
    ),
    "LISTKIT_EHLO_NAME": (
        "ehlo_name",
        None,
        "name listkit gives in EHLO (default: this machine's full name, else the From domain)",
        False,
    ),
    "LISTKIT_FROM": ("sender", None, "sender, as Name <address>", False),
    "LISTKIT_POSTAL_ADDRESS": (
        "postal_address",
        None,
        "postal address for every message",
        False,
    ),
    "LISTKIT_BASE_URL": ("base_url", None, "public URL for unsubscribe links", False),
    "LISTKIT_SITE_URL": (
        "site_url",
        None,
        "your site or blog, linked from the reader's pages (default: LISTKIT_BASE_URL's site)",
        False,
    ),
    "LISTKIT_SECRET": ("secret", None, "key that signs unsubscribe links and tokens", True),
    "LISTKIT_STRIPE_WEBHOOK_SECRET": (
        "stripe_webhook_secret",
        None,
        "Stripe endpoint signing secret(s) for /hooks/stripe, comma-separated while rotating",
        True,
    ),
    "LISTKIT_LEMONSQUEEZY_SECRET": (
        "lemonsqueezy_secret",
        None,
        "Lemon Squeezy webhook signing secret for /hooks/lemonsqueezy",
        True,
    ),
    "LISTKIT_GUMROAD_SECRET": (
        "gumroad_secret",
        None,
        "the secret path segment of the Gumroad ping URL /hooks/gumroad/<secret>",
        True,
    ),
    "LISTKIT_WEBHOOK_SECRET": (
        "webhook_secret",
        None,
        "key that signs sales posted to /hooks/sale",
        True,
    ),
    "LISTKIT_TRACK_CLICKS": (
        "track_clicks",
        "yes",
        "yes: campaign links go through listkit serve's /c/ redirect, which counts clicks",
        False,
    ),
    "LISTKIT_TOKEN_PARAM": (
        "token_param",
        "lk",
        "URL parameter that carries a delivery's token",
        False,
    ),
    "LISTKIT_DKIM_KEY": (
        "dkim_key",
        None,
        "DKIM private key file (PEM, mode 600) that signs every message; unset: unsigned",
        False,
    ),
    "LISTKIT_DKIM_SELECTOR": (
        "dkim_selector",
        None,
        "DKIM selector: the public key is published at SELECTOR._domainkey.DOMAIN",
        False,
    ),
    "LISTKIT_DKIM_DOMAIN": (
        "dkim_domain",
        None,
        "DKIM signing domain (d=); unset: the domain of LISTKIT_FROM",
        False,
    ),
    "LISTKIT_DNS": (
        "dns",
        None,
        "DNS server `listkit doctor` asks, SERVER[:PORT]; unset: the system's resolvers",
        False,
    ),
    "LISTKIT_BOUNCE_ADDRESS": (
        "bounce_address",
        None,
        "envelope sender for bounces: bounces@example.com sends as bounces+<token>@example.com",
        False,
    ),
    "LISTKIT_IMAP_URL": (
        "imap_url",
        None,
        "mailbox bounces arrive in: imaps://user:pass@host:993/INBOX or imap+starttls://...",
        False,
    ),
    "LISTKIT_IMAP_CA": (
        "imap_ca",
        None,
        "CA bundle (PEM file) to trust for an IMAP server with a private certificate",
        False,
    ),
    "LISTKIT_IMAP_DONE": (
        "imap_done",
        "delete",
        "what `bounces fetch` does with a message it understood: delete, or move:FOLDER",
        False,
    ),
    "LISTKIT_SES_TOPIC_ARN": (
        "ses_topic_arn",
        None,
        "SNS topic(s) of SES bounce and complaint notifications (ARNs, comma-separated)",
        False,
    ),
    "LISTKIT_POSTMARK_WEBHOOK_AUTH": (
        "postmark_webhook_auth",
        None,
        "user:password the Postmark bounce webhook URL carries (Basic auth)",
        True,
    ),
    "LISTKIT_MAILGUN_SIGNING_KEY": (
        "mailgun_signing_key",
        None,
        "Mailgun's HTTP webhook signing key",
        True,
    ),
    "LISTKIT_SOFT_BOUNCES": (
        "soft_bounces",
        "3/30",
        "N/DAYS: this many soft bounces within DAYS days suppress an address",
        False,
    ),
    "LISTKIT_SILENT_AFTER": (
        "silent_after",
        "5",
        "messages sent, with no purchase and no click, that make a subscriber silent",
        False,
    ),
}

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


@dataclass(frozen=True)
class Settings:
    """The effective settings of one workspace."""

    workspace: Path
    values: Mapping[str, str | None]
    sources: Mapping[str, str]

    def __getattr__(self, attr: str):
        if attr.startswith("_") or attr in ("values", "sources", "workspace"):
            raise AttributeError(attr)  # during unpickling, before the fields exist
        for name, (a, _default, _desc, _secret) in SETTINGS.items():
            if a == attr:
                return self.values.get(name)
        raise AttributeError(attr)

    @property
    def db_path(self) -> Path:
        path = Path(self.values["LISTKIT_DB"] or "listkit.db").expanduser()
        return path if path.is_absolute() else self.workspace / path

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every missing setting among ``names``."""
        missing = [n for n in names if not self.values.get(n)]
        if missing:
            listed = ", ".join(missing)
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigError(
                f"{listed} {verb} not set: add {'it' if len(missing) == 1 else 'them'} to "
                f"{self.workspace / '.env'} or the environment (see `listkit config`)"
            )

    def smtp(self) -> SMTPSettings:
        self.require("LISTKIT_SMTP_URL")
        smtp = parse_smtp_url(self.values["LISTKIT_SMTP_URL"])
        smtp = replace(smtp, ehlo_name=self.ehlo_hostname())
        ca = self.values.get("LISTKIT_SMTP_CA")
        if ca:
            path = Path(ca).expanduser()
            path = path if path.is_absolute() else self.workspace / path
            if not path.is_file():
                raise ConfigError(f"LISTKIT_SMTP_CA: no file {path}")
            smtp = replace(smtp, ca_file=str(path))
        return smtp

    def ehlo_hostname(self) -> str:
        """LISTKIT_EHLO_NAME, else this machine's full name, else the From domain.

        Receiving servers check the EHLO name: ``localhost`` or a bare host
        name reads as a misconfigured or compromised client.
        """
        name = (self.values.get("LISTKIT_EHLO_NAME") or "").strip()
        if name:
            if not _EHLO_NAME.fullmatch(name):
                raise ConfigError(
                    f"LISTKIT_EHLO_NAME must be a host name like mail.example.com "
                    f"(or an address literal like [192.0.2.1]), not {name!r}"
                )
            return name
        fqdn = _fqdn()
        if "." in fqdn and _EHLO_NAME.fullmatch(fqdn) and not fqdn.startswith("localhost"):
            return fqdn
        sender = self.values.get("LISTKIT_FROM")
        if sender:
            with contextlib.suppress(ConfigError):
                domain = parse_sender(sender)[1].rpartition("@")[2]  # in A-labels
                if _EHLO_NAME.fullmatch(domain):
                    return domain
        return fqdn if _EHLO_NAME.fullmatch(fqdn) else "localhost"

    def sender_address(self) -> tuple[str, str]:
        self.require("LISTKIT_FROM")
        return parse_sender(self.values["LISTKIT_FROM"])

    def public_base_url(self) -> str:
        self.require("LISTKIT_BASE_URL")
        url = self.values["LISTKIT_BASE_URL"].strip()
        if re.search(r"[\x00-\x20\x7f]", url):
            # It is in every message's List-Unsubscribe header.
            raise ConfigError(
                f"LISTKIT_BASE_URL must be a URL without spaces or control characters, not {url!r}"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"LISTKIT_BASE_URL must be an http(s) URL, not {url!r}")
        return url.rstrip("/")

    def site_url(self) -> str | None:
        """Where the reader's pages lead back to: LISTKIT_SITE_URL, else the site
        (scheme and host) of LISTKIT_BASE_URL, else None."""
        url = (self.values.get("LISTKIT_SITE_URL") or "").strip()
        if url:
            parts = urlsplit(url)
            if (
                re.search(r"[\x00-\x20\x7f]", url)
                or parts.scheme not in ("http", "https")
                or not parts.netloc
            ):
                raise ConfigError(f"LISTKIT_SITE_URL must be an http(s) URL, not {url!r}")
            return url
        try:
            parts = urlsplit(self.public_base_url())
        except ConfigError:
            return None
        return f"{parts.scheme}://{parts.netloc}/"

    def silent_threshold(self) -> int:
        """LISTKIT_SILENT_AFTER as a count of messages (1 or more)."""
        raw = (self.values.get("LISTKIT_SILENT_AFTER") or "5").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(
                f"LISTKIT_SILENT_AFTER must be a whole number of messages, not {raw!r}"
            )
        return int(raw)

    def secret_key(self) -> bytes:
        self.require("LISTKIT_SECRET")
        secret = self.values["LISTKIT_SECRET"]
        if len(secret) < 16:
            raise ConfigError("LISTKIT_SECRET is too short: use at least 16 random characters")
        return secret.encode()

    def clicks_tracked(self) -> bool:
        """LISTKIT_TRACK_CLICKS as a yes/no."""
        value = (self.values.get("LISTKIT_TRACK_CLICKS") or "yes").strip().lower()
        if value in ("yes", "true", "on", "1"):
            return True
        if value in ("no", "false", "off", "0"):
            return False
        raise ConfigError(f"LISTKIT_TRACK_CLICKS must be yes or no, not {value!r}")

    def effective(self) -> list[dict[str, str | None]]:
        """Rows for `listkit config`: name, value (secrets masked), source, description."""
        rows = []
        for name, (_attr, _default, desc, secret) in SETTINGS.items():
            value = self.values.get(name)
            if value and secret:
                shown = "****"
            elif value and name == "LISTKIT_SMTP_URL":
                shown = mask_url(value)
            elif value and name == "LISTKIT_IMAP_URL":
                shown = mask_imap_url(value)
            else:
                shown = value
            rows.append(
                {"name": name, "value": shown, "source": self.sources[name], "description": desc}
            )
        return rows


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
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name, (_attr, default, _desc, _secret) in SETTINGS.items():
        if name in environ:
            values[name] = environ[name] or default
            sources[name] = "environment" if environ[name] else "environment (empty)"
        elif file_values.get(name):
            values[name], sources[name] = file_values[name], ".env"
        else:
            values[name], sources[name] = default, "default" if default else "unset"
    return Settings(workspace=workspace, values=values, sources=sources)


@functools.cache
def _fqdn() -> str:
    """This machine's full name, looked up once."""
    return socket.getfqdn()
