"""Signups through a form, with double opt-in: the consent evidence and the confirmation.

The rules: a signup never tells who is on a list (the caller answers the same
way whatever happens here); an address becomes an ``active`` member only by
confirming (a ``pending`` member is never mailed a campaign); a confirmed
member is never downgraded; an address suppressed for a bounce, a complaint or
by hand is never mailed a confirmation; one that unsubscribed comes back only
through a new confirmation, which lifts its ``unsubscribed`` suppression.

Confirmation links are signed (``LISTKIT_SECRET``) and expire after
``CONFIRM_DAYS`` days. The functions that write run inside the caller's
transaction (the web app's writer, or ``immediate()``).
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from listkit.addresses import email_key, normalize_address
from listkit.audience.lists import get_list
from listkit.config import Settings
from listkit.db import now
from listkit.errors import TemplateError
from listkit.mail.mime import check_header, format_address
from listkit.mail.tracking import CONFIRM_DAYS, confirm_token, new_token
from listkit.vocab import ACTIVE, BOUNCED, COMPLAINED

CONFIRM_DIR = "_confirm"
MAX_NAME = 256
MAX_EVIDENCE = 512  # user agent, page: kept, but not without bound


def _clip(value: str | None) -> str | None:
    return value[:MAX_EVIDENCE] if value else None


def record_signup(
    db,
    list_slug: str,
    email: str,
    *,
    name: str | None = None,
    ip: str | None = None,
    agent: str | None = None,
    page: str | None = None,
    form: str | None = None,
) -> int | None:
    """Record a signup (InputError for an address that is not one); the signup's id
    when a confirmation is to be mailed, else None (already active, or suppressed).

    A new address becomes a subscriber with a ``pending`` membership; a known one
    keeps its membership as it is until it confirms.
    """
    address = normalize_address(email)
    key = email_key(address)
    name = (name or "").strip()[:MAX_NAME] or None
    lst = get_list(db, list_slug)
    stamp = now()
    suppression = db.execute("SELECT reason FROM suppressions WHERE key = ?", [key]).fetchone()
    row = db.execute("SELECT id FROM subscribers WHERE key = ?", [key]).fetchone()
    member = None
    if row is not None:
        member = db.execute(
            "SELECT status FROM memberships WHERE list_id = ? AND subscriber_id = ?",
            [lst["id"], row[0]],
        ).fetchone()
    blocked = suppression is not None and suppression[0] != "unsubscribed"
    if blocked or (member is not None and member[0] in (ACTIVE, BOUNCED, COMPLAINED)):
        state = "not_mailed"
    else:
        state = "new"
    signup_id = db.execute(
        """INSERT INTO signups (nonce, list_id, email, key, name, created, ip, agent, page, form,
           state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            new_token(),
            lst["id"],
            address,
            key,
            name,
            stamp,
            ip,
            _clip(agent),
            _clip(page),
            _clip(form),
            state,
        ],
    ).lastrowid
    if state != "new":
        return None
    if row is None:
        sid = db.execute(
            """INSERT INTO subscribers (email, key, name, fields, created, updated, source)
               VALUES (?, ?, ?, '{}', ?, ?, ?)""",
            [address, key, name, stamp, stamp, f"form:{list_slug}"],
        ).lastrowid
    else:
        sid = row[0]
    if member is None:
        db.execute(
            """INSERT INTO memberships (list_id, subscriber_id, status, created, consent_at,
               consent_method, consent_source, consent_ip, status_at, status_reason)
               VALUES (?, ?, 'pending', ?, ?, 'form', ?, ?, ?, 'signed up, not confirmed')""",
            [lst["id"], sid, stamp, stamp, _clip(page or form), ip, stamp],
        )
    return signup_id


def claim_confirmations(db, limit: int = 20) -> list[dict]:
    """Signups whose confirmation is to be mailed now, marked ``sending`` (inside the
    caller's transaction, committed before anything is sent: a crash never mails twice).

    Checked again here: an address suppressed or confirmed since it signed up is not mailed.
    """
    rows = db.execute(
        """SELECT g.id, g.nonce, g.email, g.name, g.created, l.slug, l.title, g.list_id
           FROM signups g JOIN lists l ON l.id = g.list_id
           WHERE g.state = 'new' ORDER BY g.id LIMIT ?""",
        [limit],
    ).fetchall()
    claimed = []
    for sid, nonce, email, name, created, slug, title, list_id in rows:
        key = email_key(email)
        blocked = (
            db.execute(
                "SELECT 1 FROM suppressions WHERE key = ? AND reason != 'unsubscribed'", [key]
            ).fetchone()
            or db.execute(
                """SELECT 1 FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
               WHERE s.key = ? AND m.list_id = ? AND m.status = 'active'""",
                [key, list_id],
            ).fetchone()
        )
        state = "not_mailed" if blocked else "sending"
        db.execute("UPDATE signups SET state = ? WHERE id = ?", [state, sid])
        if not blocked:
            claimed.append(
                {"id": sid, "nonce": nonce, "email": email, "name": name, "created": created}
                | {"list": slug, "list_title": title}
            )
    return claimed


CUT_OFF = (
    "cut off while mailing (the service stopped): it may have been mailed, so it is not "
    "mailed again; the person can sign up again"
)


def settle_cut_off(db) -> int:
    """At the service's start: signups left ``sending`` by a run that stopped become
    ``unknown``, never mailed again by themselves (the server may have the message,
    as with the sender's ``unknown`` deliveries). How many there were.
    """
    return db.execute(
        "UPDATE signups SET state = 'unknown', mail_reply = ? WHERE state = 'sending'",
        [CUT_OFF],
    ).rowcount


def mark_mailed(db, signup_id: int, ok: bool, reply: str) -> None:
    db.execute(
        "UPDATE signups SET state = ?, mailed_at = ?, mail_reply = ? WHERE id = ?",
        ["mailed" if ok else "failed", now(), reply[:500], signup_id],
    )


def expiry(created: str) -> int:
    """When a signup's confirmation link stops working, in Unix seconds."""
    return int(datetime.fromisoformat(created).timestamp()) + CONFIRM_DAYS * 86400


def signup_by_nonce(db, nonce: str) -> dict | None:
    row = db.execute(
        """SELECT g.id, g.email, g.state, l.slug, l.title FROM signups g
           JOIN lists l ON l.id = g.list_id WHERE g.nonce = ?""",
        [nonce],
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("id", "email", "state", "list", "list_title"), row, strict=True))


def confirm_signup(
    db, nonce: str, *, ip: str | None = None, agent: str | None = None
) -> str | None:
    """Confirm the signup ``nonce`` names (the caller checked signature and expiry).

    Returns ``confirmed``, ``already`` (a repeated confirmation changes nothing),
    ``suppressed`` (bounced, complained or suppressed by hand: not made active),
    or None for an unknown signup. Runs inside the caller's transaction.
    """
    row = db.execute(
        """SELECT id, list_id, email, key, name, created, ip, page, form, state
           FROM signups WHERE nonce = ?""",
        [nonce],
    ).fetchone()
    if row is None:
        return None
    gid, list_id, email, key, name, created, sign_ip, page, form, state = row
    if state == "confirmed":
        return "already"
    suppression = db.execute("SELECT reason FROM suppressions WHERE key = ?", [key]).fetchone()
    if suppression is not None and suppression[0] != "unsubscribed":
        return "suppressed"
    stamp = now()
    if suppression is not None:
        # A new, confirmed consent: the unsubscribe it follows no longer holds.
        db.execute("DELETE FROM suppressions WHERE key = ? AND reason = 'unsubscribed'", [key])
    sub = db.execute("SELECT id FROM subscribers WHERE key = ?", [key]).fetchone()
    if sub is None:  # removed by hand since the signup
        sid = db.execute(
            """INSERT INTO subscribers (email, key, name, fields, created, updated, source)
               VALUES (?, ?, ?, '{}', ?, ?, 'form')""",
            [email, key, name, stamp, stamp],
        ).lastrowid
    else:
        sid = sub[0]
    member = db.execute(
        "SELECT status FROM memberships WHERE list_id = ? AND subscriber_id = ?", [list_id, sid]
    ).fetchone()
    if member is not None and member[0] in (BOUNCED, COMPLAINED):
        return "suppressed"
    if member is None or member[0] != "active":  # an active member stays as it is
        db.execute(
            """INSERT INTO memberships (list_id, subscriber_id, status, created, consent_at,
               consent_method, consent_source, consent_ip, confirmed_at, confirm_ip, status_at,
               status_reason) VALUES (?, ?, 'active', ?, ?, 'double opt-in', ?, ?, ?, ?, ?,
               'confirmed')
               ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'active',
               consent_at = excluded.consent_at, consent_method = excluded.consent_method,
               consent_source = excluded.consent_source, consent_ip = excluded.consent_ip,
               confirmed_at = excluded.confirmed_at, confirm_ip = excluded.confirm_ip,
               status_at = excluded.status_at, status_reason = excluded.status_reason,
               updated = excluded.status_at""",
            [list_id, sid, stamp, created, page or form, sign_ip, stamp, ip, stamp],
        )
    db.execute(
        """UPDATE signups SET state = 'confirmed', confirmed_at = ?, confirm_ip = ?,
           confirm_agent = ? WHERE id = ?""",
        [stamp, ip, _clip(agent), gid],
    )
    return "confirmed"


class ConfirmationMail:
    """The confirmation message, from ``offers/_confirm/`` in the workspace:
    ``confirm.toml`` (its ``subject``), ``text.j2`` and optionally ``html.j2``.

    Rendered in Jinja's sandbox, undefined variables are errors, HTML autoescaped;
    every header value that comes from the signup is checked.
    """

    def __init__(self, settings: Settings, offers_dir: Path):
        settings.require("LISTKIT_FROM", "LISTKIT_POSTAL_ADDRESS", "LISTKIT_BASE_URL")
        self.sender_name, self.sender_address = settings.sender_address()
        self.base_url = settings.public_base_url()
        self.secret = settings.secret_key()
        self.postal_address = settings.values["LISTKIT_POSTAL_ADDRESS"].strip()
        folder = offers_dir / CONFIRM_DIR
        toml = folder / "confirm.toml"
        if not toml.is_file():
            raise TemplateError(
                f"{toml} is missing: the confirmation message for signups lives there "
                "(copy offers/_confirm/ from a new `listkit init` workspace)"
            )
        try:
            self.subject_source = str(tomllib.loads(toml.read_text("utf-8"))["subject"])
        except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError) as e:
            raise TemplateError(f'{toml}: needs a subject = "..." line ({e})') from None
        env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(offers_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: name is not None and name.endswith("html.j2"),
            keep_trailing_newline=True,
        )
        try:
            self.subject = env.from_string(self.subject_source)
            self.text = env.get_template(f"{CONFIRM_DIR}/text.j2")
            html = folder / "html.j2"
            self.html = env.get_template(f"{CONFIRM_DIR}/html.j2") if html.is_file() else None
        except jinja2.TemplateError as e:
            raise TemplateError(f"{folder}: {e}") from None

    def confirm_url(self, nonce: str, created: str) -> str:
        return f"{self.base_url}/confirm/{confirm_token(self.secret, nonce, expiry(created))}"

    def build(self, signup: dict) -> bytes:
        who = signup["email"]
        url = self.confirm_url(signup["nonce"], signup["created"])
        context = {
            "subscriber": {"email": signup["email"], "name": signup["name"]},
            "list": {"slug": signup["list"], "title": signup["list_title"]},
            "confirm_url": url,
            "days": CONFIRM_DAYS,
            "postal_address": self.postal_address,
        }
        try:
            subject = self.subject.render(context).strip()
            text = self.text.render(context)
            html = self.html.render(context) if self.html is not None else None
        except jinja2.TemplateError as e:
            raise TemplateError(f"offers/{CONFIRM_DIR}: {e} (for {who})") from None
        domain = self.sender_address.rpartition("@")[2]
        msg = EmailMessage()
        msg["From"] = _address(self.sender_name, self.sender_address, "LISTKIT_FROM", who)
        msg["To"] = _address(signup["name"], signup["email"], "To", who)
        msg["Subject"] = check_header(subject, "Subject", who)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid("confirm", domain=domain)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        return msg.as_bytes()


def _address(name: str | None, address: str, field: str, who: str) -> str:
    check_header(name or "", field, who)
    check_header(address, field, who)
    return format_address(name, address)
