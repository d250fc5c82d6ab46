"""Settings: read from the environment and the workspace's ``.env``.

The rule: a variable already in the environment wins over ``.env``; a setting
is only checked when a command needs it, and then a missing or malformed one
is named in the error (``LISTKIT_SMTP_URL ...``). Secrets are never printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from listkit.errors import ConfigError

# name -> (attribute, default, description, secret)
SETTINGS: dict[str, tuple[str, str | None, str, bool]] = {
    "LISTKIT_DB": ("db", "listkit.db", "SQLite database file (relative to the workspace)", False),
    "LISTKIT_SMTP_URL": (
        "smtp_url",
        None,
        "smtp://host:port, smtp+starttls://user:pass@host:587 or smtps://user:pass@host:465",
        False,
    ),
    "LISTKIT_SMTP_CA": (
        "smtp_ca",
        None,
        "CA bundle (PEM file) to trust for a server with a private certificate",
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
    "LISTKIT_SECRET": ("secret", None, "key that signs unsubscribe links and tokens", True),
    "LISTKIT_TOKEN_PARAM": (
        "token_param",
        "lk",
        "URL parameter that carries a delivery's token",
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

    def masked(self) -> str:
        scheme = {v[0]: k for k, v in SMTP_SCHEMES.items()}[self.tls]
        auth = f"{self.username}:****@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SMTPSettings:
    """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs."""
    where = "LISTKIT_SMTP_URL"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where} is malformed ({e}): {mask_url(url)}") from None
    if parts.scheme not in SMTP_SCHEMES:
        raise ConfigError(
            f"{where} must start with smtp://, smtp+starttls:// or smtps://, "
            f"not {parts.scheme + '://' if parts.scheme else repr(mask_url(url))}"
        )
    if not parts.hostname:
        raise ConfigError(f"{where} has no host: {mask_url(url)}")
    tls, default_port = SMTP_SCHEMES[parts.scheme]
    timeout = 30.0
    for item in filter(None, parts.query.split("&")):
        key, _, value = item.partition("=")
        if key == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigError(f"{where}: timeout={value!r} is not a number") from None
        else:
            raise ConfigError(f"{where}: unknown option {key!r} (known: timeout)")
    return SMTPSettings(
        host=parts.hostname,
        port=port or default_port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
    )


def mask_url(url: str) -> str:
    """Hide the password in a URL."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:****@", url)


def parse_sender(value: str) -> tuple[str, str]:
    """``Name <addr>`` or ``addr`` -> (name, addr); raises ConfigError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError("LISTKIT_FROM contains control characters")
    name, addr = parseaddr(value.strip())
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ConfigError(f"LISTKIT_FROM must look like 'Name <you@example.com>', not {value!r}")
    return name, addr


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
        ca = self.values.get("LISTKIT_SMTP_CA")
        if ca:
            path = Path(ca).expanduser()
            path = path if path.is_absolute() else self.workspace / path
            if not path.is_file():
                raise ConfigError(f"LISTKIT_SMTP_CA: no file {path}")
            smtp = replace(smtp, ca_file=str(path))
        return smtp

    def sender_address(self) -> tuple[str, str]:
        self.require("LISTKIT_FROM")
        return parse_sender(self.values["LISTKIT_FROM"])

    def public_base_url(self) -> str:
        self.require("LISTKIT_BASE_URL")
        url = self.values["LISTKIT_BASE_URL"].strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"LISTKIT_BASE_URL must be an http(s) URL, not {url!r}")
        return url.rstrip("/")

    def secret_key(self) -> bytes:
        self.require("LISTKIT_SECRET")
        secret = self.values["LISTKIT_SECRET"]
        if len(secret) < 16:
            raise ConfigError("LISTKIT_SECRET is too short: use at least 16 random characters")
        return secret.encode()

    def effective(self) -> list[dict[str, str | None]]:
        """Rows for `listkit config`: name, value (secrets masked), source, description."""
        rows = []
        for name, (_attr, _default, desc, secret) in SETTINGS.items():
            value = self.values.get(name)
            if value and secret:
                shown = "****"
            elif value and name == "LISTKIT_SMTP_URL":
                shown = mask_url(value)
            else:
                shown = value
            rows.append(
                {"name": name, "value": shown, "source": self.sources[name], "description": desc}
            )
        return rows


def load_settings(workspace: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of ``workspace``: environment first, then its ``.env``, then defaults."""
    environ = os.environ if environ is None else environ
    env_file = workspace / ".env"
    file_values = dotenv_values(env_file) if env_file.is_file() else {}
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name, (_attr, default, _desc, _secret) in SETTINGS.items():
        if environ.get(name):
            values[name], sources[name] = environ[name], "environment"
        elif file_values.get(name):
            values[name], sources[name] = file_values[name], ".env"
        else:
            values[name], sources[name] = default, "default" if default else "unset"
    return Settings(workspace=workspace, values=values, sources=sources)
