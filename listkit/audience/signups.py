"""Signups through a form, with double opt-in: the consent evidence and the confirmation.

The rules: a signup never tells who is on a list, by its answer or by its
time: recording one does the same work whoever the address is, and who is
mailed is decided afterwards, off the request path; an address is mailed at
most one confirmation per list a day, and a list at most its hourly budget
(``LISTKIT_CONFIRM_PER_HOUR``), so nobody can aim confirmations at someone
else's mailbox; an address becomes an ``active`` member only by
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from listkit.addresses import email_key, normalize_address
from listkit.audience.enrollments import enrol_joined
from listkit.audience.lists import get_list
from listkit.config import Settings
from listkit.db import now
from listkit.errors import TemplateError
from listkit.mail.dkim import signer_for
from listkit.mail.message_ids import message_id
from listkit.mail.mime import MessageBuilder, Parts
from listkit.mail.tracking import CONFIRM_DAYS, confirm_token, new_token
from listkit.vocab import BOUNCED, COMPLAINED

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
    at: str | None = None,
) -> int:
    """Record a signup as it came (InputError for an address that is not one); its id.

    The same work whoever the address is, and nothing read about it: the
    answer cannot tell, by its content or its time, who is on the list.
    Whether it is mailed a confirmation is decided later, off the request path
    (``claim_confirmations``).
    """
    address = normalize_address(email)
    name = (name or "").strip()[:MAX_NAME] or None
    lst = get_list(db, list_slug)
    return db.execute(
        """INSERT INTO signups (nonce, list_id, email, key, name, created, ip, agent, page, form,
           state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new')""",
        [
            new_token(),
            lst["id"],
            address,
            email_key(address),
            name,
            at or now(),
            ip,
            _clip(agent),
            _clip(page),
            _clip(form),
        ],
    ).lastrowid


# At most one confirmation per address and list in this time, whoever asks for it.
ONE_PER = timedelta(days=1)
# The states of a signup whose confirmation went out, or may have.
_MAILED = ("sending", "mailed", "unknown")
AGAIN = (
    "a confirmation was mailed to this address for this list less than a day ago: not mailed again"
)


def claim_confirmations(
    db, *, per_hour: int, at: datetime | None = None, limit: int = 20
) -> tuple[list[dict], bool]:
    """Decide up to ``limit`` signups waiting (state ``new``) as of ``at``: (those to
    be mailed now, marked ``sending``; whether more wait). Inside the caller's
    transaction, committed before anything is sent: a crash never mails twice.

    Not mailed, with the reason in ``mail_reply``: an address suppressed (but for
    an unsubscribe) or already an active member; one mailed a confirmation for
    the list less than a day ago (a stranger's address signed up again and again
    gets one message); one past the list's budget of ``per_hour`` confirmations
    an hour. One to be mailed that is new joins the list as ``pending``, with
    its consent evidence.
    """
    at = at or datetime.now(UTC)
    stamp = at.isoformat()
    day_ago, hour_ago = (at - ONE_PER).isoformat(), (at - timedelta(hours=1)).isoformat()
    rows = db.execute(
        """SELECT g.id, g.nonce, g.email, g.key, g.name, g.created, g.ip, g.page, g.form,
                  l.slug, l.title, g.list_id
           FROM signups g JOIN lists l ON l.id = g.list_id
           WHERE g.state = 'new' ORDER BY g.id LIMIT ?""",
        [limit],
    ).fetchall()
    claimed = []
    spent: dict[int, int] = {}  # confirmations of the last hour, per list
    for gid, nonce, email, key, name, created, ip, page, form, slug, title, list_id in rows:
        reason = _not_mailed(db, key, list_id, day_ago)
        if reason is None:
            if list_id not in spent:
                spent[list_id] = db.execute(
                    """SELECT COUNT(*) FROM signups WHERE list_id = ? AND mailed_at > ?
                       AND state IN ('sending', 'mailed', 'unknown', 'failed')""",
                    [list_id, hour_ago],
                ).fetchone()[0]
            if spent[list_id] >= per_hour:
                reason = (
                    f"over the list's budget of {per_hour} confirmations an hour "
                    "(LISTKIT_CONFIRM_PER_HOUR): not mailed; the person can sign up again later"
                )
        if reason is not None:
            db.execute(
                "UPDATE signups SET state = 'not_mailed', mail_reply = ? WHERE id = ?",
                [reason, gid],
            )
            continue
        spent[list_id] += 1
        _join_pending(db, list_id, slug, email, key, name, ip, page or form, stamp, created)
        db.execute("UPDATE signups SET state = 'sending', mailed_at = ? WHERE id = ?", [stamp, gid])
        claimed.append(
            {"id": gid, "nonce": nonce, "email": email, "name": name, "created": created}
            | {"list": slug, "list_title": title}
        )
    return claimed, len(rows) == limit


def _not_mailed(db, key: str, list_id: int, day_ago: str) -> str | None:
    """Why this address gets no confirmation for this list now, or None."""
    suppression = db.execute("SELECT reason FROM suppressions WHERE key = ?", [key]).fetchone()
    if suppression is not None and suppression[0] != "unsubscribed":
        return "suppressed (a bounce, a complaint or by hand): never mailed a confirmation"
    member = db.execute(
        """SELECT m.status FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
           WHERE s.key = ? AND m.list_id = ?""",
        [key, list_id],
    ).fetchone()
    if member is not None and member[0] in ("active", "bounced", "complained"):
        return f"already a member of the list ({member[0]}): not mailed"
    recent = db.execute(
        f"""SELECT 1 FROM signups WHERE key = ? AND list_id = ? AND mailed_at > ?
            AND state IN ({", ".join("?" * len(_MAILED))}) LIMIT 1""",
        [key, list_id, day_ago, *_MAILED],
    ).fetchone()
    return AGAIN if recent is not None else None


def _join_pending(db, list_id, slug, email, key, name, ip, source, stamp, signed_up) -> None:
    """A new address becomes a subscriber with a ``pending`` membership; a known one
    keeps its membership as it is until it confirms. Its ``consent_at`` is when the
    person signed up (``signed_up``, the signup's time, as the confirmation keeps it),
    not when the mailer took the signup (``stamp``)."""
    row = db.execute("SELECT id FROM subscribers WHERE key = ?", [key]).fetchone()
    if row is None:
        sid = db.execute(
            """INSERT INTO subscribers (email, key, name, fields, created, updated, source)
               VALUES (?, ?, ?, '{}', ?, ?, ?)""",
            [email, key, name, stamp, stamp, f"form:{slug}"],
        ).lastrowid
    else:
        sid = row[0]
    db.execute(
        """INSERT INTO memberships (list_id, subscriber_id, status, created, consent_at,
           consent_method, consent_source, consent_ip, status_at, status_reason)
           VALUES (?, ?, 'pending', ?, ?, 'form', ?, ?, ?, 'signed up, not confirmed')
           ON CONFLICT (list_id, subscriber_id) DO NOTHING""",
        [list_id, sid, stamp, signed_up, _clip(source), ip, stamp],
    )


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
    """The server's answer to a confirmation claimed ``sending`` (``mailed_at`` is
    when it was claimed; a signup confirmed meanwhile stays confirmed)."""
    db.execute(
        "UPDATE signups SET state = ?, mail_reply = ? WHERE id = ? AND state = 'sending'",
        ["mailed" if ok else "failed", reply[:500], signup_id],
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
        enrol_joined(db, sid, list_id, at=datetime.fromisoformat(stamp))
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
        self.postal_address = settings.postal_address
        # Built and signed (when DKIM is configured) as campaigns' messages are,
        # but no list mail: no List-Id, no List-Unsubscribe.
        self.domain = self.sender_address.rpartition("@")[2]
        self.builder = MessageBuilder(
            sender_name=self.sender_name,
            sender_address=self.sender_address,
            list_id=None,
            auto_submitted=True,
        )
        self.signer = signer_for(settings, self.sender_address)
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
        data = self.builder.build(
            Parts(
                to_address=signup["email"],
                to_name=signup["name"],
                subject=subject,
                text=text,
                html=html,
                message_id=message_id(signup["nonce"], self.domain),
                unsubscribe_url=None,
            ),
            who=who,
        )
        return self.signer.sign(data) if self.signer is not None else data
