"""A workspace: a folder with ``.env``, ``offers/``, ``campaigns/`` and the database.

``Workspace`` is what every command works on: it knows its folder, reads its
settings once, and opens the database once (through ``db.open_db``).
``init_workspace`` makes a new one from the examples shipped with listkit,
and never overwrites a file that is already there.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sqlite_utils import Database

from listkit.config import Settings, load_settings
from listkit.db import open_db
from listkit.errors import InputError, ListkitError
from listkit.files import write_private

ENV_TEMPLATE = """\
# listkit settings for this workspace. Variables set in the environment win
# over this file. `listkit config` shows the effective values.

# SQLite database, relative to this folder.
LISTKIT_DB=listkit.db

# Where messages go: smtp://host:port (plain), smtp+starttls://user:pass@host:587
# or smtps://user:pass@host:465. Percent-encode @ / : ? # % in the user name
# and password (@ as %40, / as %2F, ...). `listkit sink` runs a local capture
# server on port 1025 for trying campaigns safely.
LISTKIT_SMTP_URL=smtp://127.0.0.1:1025

# The name given to the server in EHLO (default: this machine's full name, or
# the domain of LISTKIT_FROM). Set it to your mail host's name if you have one.
# LISTKIT_EHLO_NAME=mail.example.com

# The sender, as Name <address>.
LISTKIT_FROM=Your Name <you@example.com>

# Your postal address: the law (CAN-SPAM) wants it in every message.
LISTKIT_POSTAL_ADDRESS=Your Business, 1 Main Street, Springfield

# Public URL where unsubscribe links point (listkit serve, or your site).
LISTKIT_BASE_URL=https://example.com/listkit

# Signs unsubscribe links and tracking tokens. Keep it secret; changing it
# breaks the links in messages already sent.
LISTKIT_SECRET={secret}

# DKIM signing: `listkit dkim keygen` writes a key and prints the two lines
# to set here (and the DNS record to publish). Unset, mail goes unsigned.
# The private key file (mode 600), relative to this folder:
# LISTKIT_DKIM_KEY=dkim-news2611.pem
# The selector: the public key is published at SELECTOR._domainkey.DOMAIN.
# LISTKIT_DKIM_SELECTOR=news2611
# The signing domain (d=), only if it is not the domain of LISTKIT_FROM:
# LISTKIT_DKIM_DOMAIN=example.com

# Bounces and complaints. The envelope sender (VERP): each message goes out
# from bounces+<token>@example.com, so a bounce names its delivery.
# LISTKIT_BOUNCE_ADDRESS=bounces@example.com
# The mailbox `listkit bounces fetch` reads (imaps:// or imap+starttls://):
# LISTKIT_IMAP_URL=imaps://bounces%40example.com:password@imap.example.com:993/INBOX
# What fetch does with a message it understood: delete, or move:FOLDER.
# LISTKIT_IMAP_DONE=move:Processed
# This many soft bounces of an address within DAYS days suppress it:
# LISTKIT_SOFT_BOUNCES=3/30
"""


def examples_dir() -> Path:
    """The shipped example offers and campaigns.

    Installed from a wheel they are ``listkit/_examples``; in a source
    checkout (editable install) they are the repository's own top-level
    ``offers/`` and ``campaigns/``, the only copy.
    """
    packaged = Path(str(resources.files("listkit"))) / "_examples"
    if (packaged / "offers").is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent
    if (source / "offers").is_dir() and (source / "campaigns").is_dir():
        return source
    raise ListkitError("the example offers and campaigns are missing from this installation")


def init_workspace(directory: Path) -> list[Path]:
    """Create a working workspace in ``directory``; return the paths created.

    Refuses, changing nothing, if any file it would write already exists.
    """
    directory = directory.expanduser()
    examples = examples_dir()
    plan: list[tuple[Path, Path | None]] = [(directory / ".env", None)]
    for sub in ("offers", "campaigns"):
        for src in sorted((examples / sub).rglob("*")):
            if src.is_file() and "__pycache__" not in src.parts:
                plan.append((directory / sub / src.relative_to(examples / sub), src))
    db_file = directory / Settings.db.default
    existing = [dest for dest, _src in plan if dest.exists()]
    if db_file.exists():
        existing.append(db_file)
    if existing:
        listed = ", ".join(str(p) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise ListkitError(
            f"{directory} already has {listed}{more}: listkit init never overwrites files"
        )
    directory.mkdir(parents=True, exist_ok=True)
    created = []
    for dest, src in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src is None:
            write_private(dest, ENV_TEMPLATE.format(secret=secrets.token_urlsafe(32)))
        else:
            shutil.copyfile(src, dest)
        created.append(dest)
    open_db(db_file).close()
    created.append(db_file)
    return created


@dataclass
class Workspace:
    """The folder a command works in, its settings and (lazily) its database."""

    root: Path
    _settings: Settings | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.root)
        return self._settings

    @property
    def db(self) -> Database:
        """The workspace's database, opened (and migrated) on first use."""
        if self._db is None:
            self._db = open_db(self.settings.db_path)
        return self._db

    @property
    def offers_dir(self) -> Path:
        return self.root / "offers"

    @property
    def campaigns_dir(self) -> Path:
        return self.root / "campaigns"

    @property
    def sequences_dir(self) -> Path:
        return self.root / "sequences"

    def refuse_own_file(self, path: Path, option: str) -> None:
        """InputError when ``path`` (an output file) is the database (its WAL, SHM or
        send marks) or ``.env``: writing there would destroy every subscriber, the
        record of what may have been sent, or the settings."""
        db = self.settings.db_path
        own = [(db, "database"), (Path(f"{db}-wal"), "database"), (Path(f"{db}-shm"), "database")]
        own.append((Path(f"{db}-marks"), "send marks file"))
        own.append((self.root / ".env", "settings file"))
        for mine, what in own:
            try:
                same = os.path.samefile(path, mine)
            except OSError:  # one of them does not exist
                same = False
            if same:
                raise InputError(f"{option} {path} is this workspace's {what}: name another file")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
