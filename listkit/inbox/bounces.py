"""Bounces and complaints: reading reports into one shape, matching them, applying effects.

Parsing is pure (``parse`` takes a message's bytes and returns a ``Report``):
RFC 3464 delivery status notifications, RFC 5965 feedback reports (ARF
complaints) and Microsoft's JMRP, the common plain-text bounces (Exim, qmail,
old Gmail and Exchange), and auto-replies, which are recognised and ignored.
What each refusal means is ``mail.replies.classify``'s verdict, the one
``send`` gives the same reply. A message that is none of these is ``unknown``
and is left alone by the mailbox readers; a subject alone never makes a
message a bounce or an auto-reply.

The rule for matching (``match``): only a report naming one of listkit's
deliveries by its token (the VERP address, or a returned listkit Message-ID)
is listkit's own. Without VERP, a report in a mail server's own form
(``Report.structured``) may also match the recipient's recent delivery. A
person's message never suppresses anyone, and a mailbox reader removes only
what it knew by form or headers (``Handled.understood``).

The rule for effects (``apply``, transaction-free: the caller commits): a
report has its effect once, keyed on its identity (its Message-ID, or a digest
of its bytes) and the recipient; a hard bounce suppresses the address, soft
bounces suppress when ``LISTKIT_SOFT_BOUNCES`` of them fall within its window,
a complaint unsubscribes from everything and suppresses. Nothing here ever
makes an address active.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import getaddresses, parseaddr
from pathlib import Path

from sqlite_utils import Database

from listkit import vocab
from listkit.addresses import email_key
from listkit.audience.deliveries import delivery_id
from listkit.config import Settings, SoftRule
from listkit.db import immediate, now, seconds
from listkit.inbox.mailbox import IMAPMailbox, read_messages
from listkit.mail.message_ids import returned_message_id
from listkit.mail.replies import ENHANCED_STATUS, HARD, IGNORED, SOFT, classify
from listkit.mail.verp import token_from_address
from listkit.runlock import run_lock

# What a recipient line of a report comes to (the verdicts are ``mail.replies``').
COMPLAINT = "complaint"

_ADDRESS = re.compile(r"<?([^\s<>@:;,\"']+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")
_BOUNCE_SENDER = re.compile(r"^(?:mailer-daemon|postmaster|mail delivery)", re.IGNORECASE)


@dataclass(frozen=True)
class Recipient:
    email: str
    outcome: str  # hard | soft | complaint | ignored
    status: str | None = None  # the enhanced status code, 5.1.1
    diagnostic: str | None = None


@dataclass
class Report:
    """What one message says, before it is matched to a delivery."""

    kind: str  # dsn | text_bounce | complaint | auto_reply | unknown
    identity: str  # the report's own Message-ID, or sha256 of its bytes
    format: str  # rfc3464 | arf | exim | qmail | gmail | exchange | generic | ...
    recipients: list[Recipient] = field(default_factory=list)
    token: str | None = None  # from the VERP address the report came back to
    message_id: str | None = None  # the returned message's Message-ID
    message_token: str | None = None  # the token in it, when it is one of ours
    subject: str | None = None
    # What the report was known by, when a mail server's form or headers say what it is:
    # "multipart/report" (an RFC 3464 delivery report or RFC 5965 feedback report, whole),
    # "jmrp" (Microsoft's complaint), "auto-submitted", "x-autoreply", "x-failed-recipients"
    # or a relay's signed notification ("relay"). None: known by its words alone.
    known_by: str | None = None

    @property
    def structured(self) -> bool:
        """A delivery or feedback report in a mail server's own form (or a relay's signed
        notification): the only kind a recipient match may act on."""
        return self.known_by in ("multipart/report", "jmrp", "relay")


def parse(data: bytes) -> Report:
    """Read one message (its raw bytes) as a bounce, complaint, auto-reply or nothing.

    Anyone can mail the bounce address: a message nested deeper than Python's
    parser can follow (thousands of multiparts) is "unknown", left for a person,
    and never stops the reading of the others."""
    try:
        return _parse(data)
    except RecursionError:
        identity = "sha256:" + hashlib.sha256(data).hexdigest()
        return Report(kind="unknown", identity=identity, format="unreadable: nested too deeply")


def _parse(data: bytes) -> Report:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    own_id = _h(msg, "Message-ID").strip()
    identity = own_id if own_id else "sha256:" + hashlib.sha256(data).hexdigest()
    subject = _header(msg, "Subject")
    report = Report(kind="unknown", identity=identity, format="none", subject=subject)
    report.token = _verp_token(msg)
    report_type = ""
    if msg.is_multipart():
        value = msg.get_param("report-type")
        report_type = email.utils.collapse_rfc2231_value(value).lower() if value else ""

    feedback = _part(msg, "message/feedback-report")
    if report_type == "feedback-report" or feedback is not None:
        if report_type == "feedback-report" and feedback is not None:
            report.known_by = "multipart/report"
        _read_arf(msg, feedback, report)
        return report
    jmrp = _jmrp_original(msg, subject)
    if jmrp is not None:
        report.known_by = "jmrp"
        _read_jmrp(jmrp, report)
        return report
    status = _part(msg, "message/delivery-status")
    if status is not None:
        _read_dsn(msg, status, report)
        if report.recipients:
            if report_type == "delivery-status":
                report.known_by = "multipart/report"
            else:
                report.known_by = _known_header(msg)
            return report
        report.kind, report.format = "unknown", "none"
    # Bounces say Auto-Submitted too (RFC 3834 asks them to): look for one first.
    _read_text_bounce(msg, report)
    if report.kind != "unknown":
        report.known_by = _known_header(msg)
    elif _is_auto_reply(msg) and not _looks_like_bounce(msg):
        report.kind, report.format = "auto_reply", "rfc3834"
        report.known_by = _known_header(msg)
    return report


# Headers only mail software writes on what it generates (RFC 3834 Auto-Submitted, the
# auto-responders' own, Exim's list of failed recipients): what lets a message be removed.
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")


def _known_header(msg: Message) -> str | None:
    auto = _h(msg, "Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        return "auto-submitted"
    for name in _AUTO_HEADERS:
        if _h(msg, name):
            return name.lower()
    if _h(msg, "Precedence").strip().lower() == "auto_reply":
        return "precedence: auto_reply"
    if _h(msg, "X-Failed-Recipients"):
        return "x-failed-recipients"
    return None


def _h(msg: Message, name: str) -> str:
    """A header as text ('' when absent); raw 8-bit bytes come back as a Header object."""
    value = msg.get(name)
    return "" if value is None else str(value)


def _all(msg: Message, name: str) -> list[str]:
    return [str(v) for v in msg.get_all(name) or []]


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    try:
        decoded = email.header.make_header(email.header.decode_header(str(value)))
        return re.sub(r"\s+", " ", str(decoded)).strip()
    except (ValueError, LookupError, email.errors.MessageError):  # garbage charsets
        return re.sub(r"\s+", " ", str(value)).strip()


def _part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        inner = part.get_payload()
        if isinstance(inner, list):  # message/* parts hold their message
            return "\n".join(m.as_string() for m in inner if isinstance(m, Message))
        return str(inner or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # an unknown charset, or a name no codec can have
        return payload.decode("utf-8", errors="replace")


def _verp_token(msg: Message) -> str | None:
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        for value in _all(msg, name):
            token = token_from_address(value)
            if token:
                return token
    return None


def _returned_headers(msg: Message) -> str:
    """The headers of the message that came back (text/rfc822-headers or message/rfc822)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            return _text(part)
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return "".join(f"{k}: {v}\n" for k, v in inner[0].items())
            return _text(part)
    return ""


def _fields(text: str) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status or feedback-report body."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                groups.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        groups.append(current)
    return groups


def _typed_address(value: str | None) -> str | None:
    """``rfc822; ann@example.com`` -> ``ann@example.com``."""
    if not value:
        return None
    _kind, _, address = value.partition(";") if ";" in value else ("", "", value)
    m = _ADDRESS.search(address.strip())
    return m.group(1) if m else None


def _status_body(part: Message) -> str:
    # compat32 parses message/delivery-status into a list of header blocks.
    inner = part.get_payload()
    if isinstance(inner, list):
        return "\n".join("".join(f"{k}: {v}\n" for k, v in block.items()) for block in inner)
    return _text(part)


def _read_dsn(msg: Message, status_part: Message, report: Report) -> None:
    groups = _fields(_status_body(status_part))
    per_message = groups[0] if groups else {}
    mta = (per_message.get("reporting-mta") or "").lower()
    report.kind = "dsn"
    report.format = "rfc3464"
    if "amazonses" in mta:
        report.format = "ses"
    elif "google" in mta:
        report.format = "gmail"
    elif "outlook" in mta or "prod.exchangelabs" in mta or "protection.outlook" in mta:
        report.format = "exchange"
    elif per_message.get("x-postfix-queue-id"):
        report.format = "postfix"
    if not report.token:
        report.token = token_from_address(per_message.get("x-postfix-sender"))
    # The human part says which command the refusal answered ("in reply to end of DATA
    # command", ">>> DATA"); when it names only the content's, that holds for every line.
    commands = {
        c.upper().replace("END OF ", "")
        for c in re.findall(
            r"(?:in reply to (?:the )?|>>> ?)(end of DATA|DATA|RCPT TO|MAIL FROM)\b",
            _human_part(msg),
            re.IGNORECASE,
        )
    }
    command = "DATA" if commands == {"DATA"} else None
    for group in groups:
        address = _typed_address(group.get("final-recipient") or group.get("original-recipient"))
        if not address:
            continue
        status = group.get("status")
        m = ENHANCED_STATUS.search(status or "")
        status = ".".join(m.groups()) if m else None
        diagnostic = group.get("diagnostic-code")
        if diagnostic and ";" in diagnostic:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        outcome = classify(
            None, diagnostic, status=status, action=group.get("action"), command=command
        )
        report.recipients.append(Recipient(address, outcome, status, diagnostic))
    headers = _returned_headers(msg)
    report.message_id, report.message_token = returned_message_id(headers)


def _read_arf(msg: Message, feedback: Message | None, report: Report) -> None:
    report.kind, report.format = "complaint", "arf"
    fields: dict[str, str] = {}
    if feedback is not None:
        for group in _fields(_status_body(feedback)):
            fields.update(group)
    if not report.token:
        report.token = token_from_address(fields.get("original-mail-from"))
    headers = _returned_headers(msg)
    report.message_id, report.message_token = returned_message_id(headers)
    recipient = _typed_address(fields.get("original-rcpt-to")) or _typed_address(
        fields.get("removal-recipient")
    )
    if recipient is None:
        to = re.search(r"^To:\s*(.+)$", headers, re.IGNORECASE | re.MULTILINE)
        recipient = _typed_address(to.group(1)) if to else None
    feedback_type = (fields.get("feedback-type") or "abuse").lower()
    # An abuse (spam) report or an opt-out is the reader's "no"; fraud, virus,
    # auth-failure and the rest are about the message, not the reader's wish.
    outcome = COMPLAINT if feedback_type in ("abuse", "complaint", "opt-out") else IGNORED
    report.recipients.append(
        Recipient(recipient or "", outcome, None, f"feedback-type {feedback_type}")
    )


def _jmrp_original(msg: Message, subject: str | None) -> Message | None:
    """The complained-of message of a Microsoft JMRP report, else None.

    Outlook.com's junk mail reporting program sends a multipart/mixed message,
    "complaint about message from <IP>", that attaches the original as message/rfc822
    with the reader's address in ``X-HmXmrOriginalRecipient``."""
    if msg.get_content_type() != "multipart/mixed" or not subject:
        return None
    if not subject.lower().startswith("complaint about message from"):
        return None
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and inner[0].get("X-HmXmrOriginalRecipient"):
                return inner[0]
    return None


def _read_jmrp(original: Message, report: Report) -> None:
    report.kind, report.format = "complaint", "jmrp"
    headers = "".join(f"{k}: {v}\n" for k, v in original.items())
    report.message_id, report.message_token = returned_message_id(headers)
    recipient = _typed_address(_h(original, "X-HmXmrOriginalRecipient"))
    report.recipients.append(Recipient(recipient or "", COMPLAINT, None, "feedback-type abuse"))


def _is_auto_reply(msg: Message) -> bool:
    """Said so by its headers (never by its subject alone: "Vacation plans" is a person)."""
    known = _known_header(msg)
    return known is not None and known != "x-failed-recipients"


def _looks_like_bounce(msg: Message) -> bool:
    """From a mail system, or a report: never to be taken for an auto-reply and deleted."""
    sender = parseaddr(_h(msg, "From"))[1]
    return (
        bool(_BOUNCE_SENDER.match(sender) or _BOUNCE_SENDER.match(_h(msg, "From").strip()))
        or msg.get_content_type() == "multipart/report"
        or "X-MS-Exchange-Message-Is-Ndr" in msg
    )


def _human_part(msg: Message) -> str:
    """The text a report's first part gives people (RFC 6522), not the returned message."""
    part = msg.get_payload(0) if msg.is_multipart() else msg
    if isinstance(part, Message) and part.is_multipart():
        part = next((p for p in part.walk() if p.get_content_type() == "text/plain"), None)
    if not isinstance(part, Message) or part.get_content_maintype() != "text":
        return ""
    return _text(part)


def _body_text(msg: Message) -> str:
    if not msg.is_multipart():
        return _text(msg)
    texts = [
        _text(p)
        for p in msg.walk()
        if p.get_content_type() == "text/plain" and p.get_content_disposition() != "attachment"
    ]
    return "\n".join(texts)


_RETURNED_MARKERS = re.compile(
    r"^(?:-{2,} ?This is a copy of the message|--- Below this line is a copy|"
    r"-{2,} ?Original message|----- Original message -----|"
    r"-{2,} ?The header of the original message|Original message headers:)",
    re.IGNORECASE | re.MULTILINE,
)


def _read_text_bounce(msg: Message, report: Report) -> None:
    # A mail system's sender, or Exim's header: never a subject alone (a person may
    # write "Undeliverable" in one).
    sender = parseaddr(_h(msg, "From"))[1]
    from_name = _h(msg, "From").strip()
    looks_like = bool(_BOUNCE_SENDER.match(sender) or _BOUNCE_SENDER.match(from_name)) or bool(
        _h(msg, "X-Failed-Recipients")
    )
    if not looks_like:
        return
    body = _body_text(msg)
    cut = _RETURNED_MARKERS.search(body)
    explanation, returned = (body[: cut.start()], body[cut.end() :]) if cut else (body, "")
    if not returned:
        returned = _returned_headers(msg)
    report.message_id, report.message_token = returned_message_id(returned)
    recipients: list[tuple[str, str]] = []  # (address, its explanation)
    gmail = re.search(
        r"Delivery to the following recipients? (?:(failed permanently)|failed temporarily|"
        r"(has been delayed)|failed):\s*\n\s*\n?\s*(\S+@\S+)(.*)",
        explanation,
        re.DOTALL,
    )
    if "qmail-send program" in explanation:
        report.format = "qmail"
        for block in re.split(r"\n\s*\n", explanation):
            m = re.match(r"\s*<([^>\s]+@[^>\s]+)>:\s*(.*)", block, re.DOTALL)
            if m:
                recipients.append((m.group(1), " ".join(m.group(2).split())))
    elif gmail:
        report.format = "gmail"
        detail = " ".join(gmail.group(4).split())
        if not gmail.group(1) and not ENHANCED_STATUS.search(detail):
            detail = "4.0.0 " + detail  # "failed temporarily", or a delay
        recipients.append((gmail.group(3), detail))
    elif _h(msg, "X-Failed-Recipients"):
        report.format = "exim"
        for _name, address in getaddresses(_all(msg, "X-Failed-Recipients")):
            if not address:
                continue
            m = re.search(
                rf"^\s+<?{re.escape(address)}>?:?\s*\n((?:[ \t]+\S.*\n?)*)",
                explanation,
                re.MULTILINE | re.IGNORECASE,
            )
            recipients.append((address, " ".join((m.group(1) if m else "").split())))
    else:
        report.format = "generic"
        seen = set()
        for line in explanation.splitlines():
            for am in _ADDRESS.finditer(line):
                address = am.group(1)
                if email_key(address) in seen or _BOUNCE_SENDER.match(address):
                    continue
                if token_from_address(address):
                    continue
                seen.add(email_key(address))
                recipients.append((address, " ".join(explanation.split())[:500]))
        if len(recipients) != 1:
            recipients = []  # unsure which address failed: leave it for a person
        returned_by = re.search(r"Remote Server returned '([^']*)'", explanation)
        if "Delivery has failed to these recipients or groups" in explanation:
            report.format = "exchange"  # Exchange's NDR, its delivery-status part missing
            if returned_by and recipients:
                recipients = [(recipients[0][0], " ".join(returned_by.group(1).split()))]
    # "THIS IS A WARNING MESSAGE ONLY": the server is still trying; nothing has failed.
    delayed = bool(_DELAY_WARNING.search(explanation)) or bool(gmail and gmail.group(2))
    for address, detail in recipients:
        m = ENHANCED_STATUS.search(detail)
        status = ".".join(m.groups()) if m else None
        outcome = classify(None, detail, action="delayed" if delayed else None)
        report.recipients.append(Recipient(address, outcome, status, detail[:500] or None))
    if report.recipients:
        report.kind = "text_bounce"
    else:
        report.format = "none"


_DELAY_WARNING = re.compile(
    r"this is a warning message only|has been delayed|will (?:be retried|continue trying|"
    r"keep trying)|still (?:being )?(?:retried|trying)|could not be delivered yet",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------
# Matching and effects


# A recipient match only counts with a delivery this recent.
RECENT_DAYS = 30


@dataclass
class Outcome:
    """What one recipient line of a report did."""

    recipient: str
    outcome: str  # hard | soft | complaint | ignored
    matched_by: str | None  # verp | message_id | recipient | None (no delivery found)
    delivery_id: int | None
    campaign: str | None
    effect: str  # suppressed | unsubscribed | counted | already | duplicate | unmatched | ignored
    status: str | None = None  # the enhanced status code the report gave

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def match(
    db: Database, report: Report, recipient: str, *, secret: bytes, verp: bool = False
) -> tuple[str | None, tuple | None]:
    """(how, delivery row (id, campaign_id, email, slug)) for one recipient of a report.

    The VERP token and the token in a returned Message-ID name one delivery: only
    someone who received that message knows them. A recipient's address is known to
    anyone, so it counts only without VERP (``verp`` False), only for a report in a mail
    server's own form (``Report.structured``), and only for a delivery of the last
    ``RECENT_DAYS``."""
    sql = """SELECT d.id, d.campaign_id, coalesce(d.sent_to, s.email), c.slug FROM deliveries d
             JOIN campaigns c ON c.id = d.campaign_id
             JOIN subscribers s ON s.id = d.subscriber_id"""
    for how, token in (("verp", report.token), ("message_id", report.message_token)):
        did = delivery_id(db, secret, token) if token else None
        if did is not None:
            return how, db.execute(f"{sql} WHERE d.id = ?", [did]).fetchone()
    if recipient and not verp and report.structured:
        since = seconds() - RECENT_DAYS * 86_400
        row = db.execute(
            f"""{sql} WHERE s.key = ? AND d.sent_unix >= ? AND d.state = 'sent'
                ORDER BY d.sent_unix DESC, d.id DESC LIMIT 1""",
            [email_key(recipient), since],
        ).fetchone()
        if row:
            return "recipient", row
    return None, None


def apply(
    db: Database,
    report: Report,
    *,
    source: str,
    secret: bytes,
    rule: SoftRule | None = None,
    verp: bool = False,
) -> list:
    """Record a report and have its effects, once. No transaction of its own: the caller
    wraps it (``db.immediate`` in the CLI, the web writer in ``listkit serve``).
    ``verp``: the workspace sends with VERP (``LISTKIT_BOUNCE_ADDRESS``), so only a
    report naming one of its deliveries by token counts (see ``match``)."""
    rule = rule or Settings.soft_bounces.parsed_default()
    outcomes: list[Outcome] = []
    if report.kind in ("unknown", "auto_reply"):
        return outcomes
    for rcpt in report.recipients:
        how, row = match(db, report, rcpt.email, secret=secret, verp=verp)
        delivery_id, campaign_id, address, slug = row if row else (None, None, rcpt.email, None)
        # The delivery's own address wins over what a relay rewrote.
        address = address or rcpt.email
        o = Outcome(
            rcpt.email or address, rcpt.outcome, how, delivery_id, slug, "ignored", rcpt.status
        )
        outcomes.append(o)
        if rcpt.outcome == IGNORED:
            continue
        if row is None:
            o.effect = "unmatched"  # not ours, or too old to tell: never act on a stranger
            continue
        kind = vocab.COMPLAINT if rcpt.outcome == COMPLAINT else vocab.BOUNCE
        event_key = f"{report.identity}|{email_key(address)}"
        detail = {
            "outcome": rcpt.outcome,
            "status": rcpt.status,
            "diagnostic": rcpt.diagnostic,
            "format": report.format,
            "matched_by": how,
            "source": source,
        }
        inserted = db.execute(
            """INSERT INTO events (delivery_id, kind, at, report_id, email_key, detail)
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [delivery_id, kind, now(), event_key, email_key(address), json.dumps(detail)],
        ).rowcount
        if not inserted:
            o.effect = "duplicate"
            continue
        o.effect = _effect(db, rcpt, address, campaign_id, source, rule)
    return outcomes


# The suppression reason each outcome records (from vocab.SUPPRESSION_REASONS).
SUPPRESSION_REASONS = {
    HARD: vocab.HARD_BOUNCE,
    SOFT: vocab.SOFT_BOUNCE,
    COMPLAINT: vocab.COMPLAINT,
}


def _effect(
    db: Database, rcpt: Recipient, address: str, campaign_id: int, source: str, rule: SoftRule
) -> str:
    key = email_key(address)
    stamp = now()
    if rcpt.outcome == SOFT:
        since = (datetime.now(UTC) - timedelta(days=rule.days)).isoformat()
        n = db.execute(
            """SELECT COUNT(*) FROM events WHERE email_key = ? AND kind = 'bounce'
               AND at >= ? AND json_extract(detail, '$.outcome') = 'soft'""",
            [key, since],
        ).fetchone()[0]
        if n < rule.count:
            return "counted"
        status, note = vocab.BOUNCED, f"{n} soft bounces in {rule.days} days"
    elif rcpt.outcome == HARD:
        status, note = vocab.BOUNCED, rcpt.status or rcpt.diagnostic
    else:
        status, note = vocab.COMPLAINED, "spam complaint"
    reason = SUPPRESSION_REASONS[rcpt.outcome]
    suppressed = db.execute(
        """INSERT INTO suppressions (key, email, reason, created, campaign_id, source, note)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING""",
        [key, address.strip(), reason, stamp, campaign_id, source, (note or "")[:200]],
    ).rowcount
    # A complaint leaves every list; a bounce marks the address bounced on each. Only
    # active memberships change: an unsubscribe already recorded stays as it was.
    changed = db.execute(
        """UPDATE memberships SET status = ?, status_at = ?, status_reason = ?, updated = ?
           WHERE status = 'active'
             AND subscriber_id = (SELECT id FROM subscribers WHERE key = ?)""",
        [status, stamp, reason, stamp, key],
    ).rowcount
    if suppressed:
        return "unsubscribed" if rcpt.outcome == COMPLAINT else "suppressed"
    return "unsubscribed" if changed and rcpt.outcome == COMPLAINT else "already"


# ---------------------------------------------------------------------------
# Intake: files and IMAP


@dataclass
class Handled:
    """One message read from a mailbox, and what it did."""

    label: str
    kind: str
    format: str
    outcomes: list[Outcome]
    known_by: str | None = None  # Report.known_by

    @property
    def understood(self) -> bool:
        """Safe to move or delete: known as a report or auto-reply by its form or headers
        (``Report.known_by``: never by its subject or words alone), and every recipient
        matched to a delivery, even one it has no effect on (an auto-reply names none).
        Others stay for a person."""
        if self.kind == "unknown" or self.known_by is None:
            return False
        return all(o.matched_by is not None for o in self.outcomes)

    def as_dict(self) -> dict:
        return {
            "message": self.label,
            "kind": self.kind,
            "format": self.format,
            "understood": self.understood,
            "known_by": self.known_by,
            "recipients": [o.as_dict() for o in self.outcomes],
        }


def process(
    db: Database,
    messages: list[tuple[str, bytes]],
    *,
    source: str,
    secret: bytes,
    rule: SoftRule,
    verp: bool = False,
) -> list[Handled]:
    """Parse and apply each message. No transaction of its own."""
    handled = []
    for label, data in messages:
        report = parse(data)
        outcomes = apply(db, report, source=source, secret=secret, rule=rule, verp=verp)
        handled.append(Handled(label, report.kind, report.format, outcomes, report.known_by))
    return handled


def verp_on(ws) -> bool:
    """Whether the workspace sends with VERP (``LISTKIT_BOUNCE_ADDRESS`` set)."""
    return ws.settings.bounce_address is not None


def import_path(ws, path: str) -> list[Handled]:
    """``listkit bounces import``: every message of a file, mbox, Maildir or folder, in one
    transaction. The files are only read."""
    rule = ws.settings.soft_bounces
    messages = list(read_messages(path))
    with immediate(ws.db):
        return process(
            ws.db,
            messages,
            source=f"import:{Path(path).name}",
            secret=ws.settings.secret_key(),
            rule=rule,
            verp=verp_on(ws),
        )


@dataclass
class FetchSummary:
    mailbox: str
    handled: list[Handled] = field(default_factory=list)
    removed: int = 0
    removal: str = ""
    finished_earlier: int = 0  # understood by an earlier run that stopped before removing

    def as_dict(self) -> dict:
        return {
            "mailbox": self.mailbox,
            "messages": [h.as_dict() for h in self.handled],
            "removed": self.removed,
            "removal": self.removal,
            "finished_earlier": self.finished_earlier,
        }


FETCH_LOCK = ".listkit-bounces.lock"


def fetch(
    ws, *, batch: int = 500, after_commit: Callable[[], object] = lambda: None
) -> FetchSummary:
    """``listkit bounces fetch``: read new messages over IMAP, commit, then move or delete
    exactly those understood. One run at a time per workspace (cron runs may overlap).

    ``after_commit`` runs after each batch's commit, before any of its messages is
    touched (the integration run is killed there)."""
    with run_lock(
        ws.root / FETCH_LOCK,
        lambda _holder: (
            "another `listkit bounces fetch` is running in this workspace; "
            "try again when it has finished"
        ),
    ):
        return _fetch(ws, batch, after_commit)


def _fetch(ws, batch: int, after_commit: Callable[[], object]) -> FetchSummary:

    settings = ws.settings.imap()
    move_to = ws.settings.imap_done
    rule = ws.settings.soft_bounces
    verp = verp_on(ws)
    secret = ws.settings.secret_key()
    db = ws.db
    # The mailbox, whichever port or TLS mode reaches it.
    key = f"{settings.username}@{settings.host}/{settings.mailbox}"
    summary = FetchSummary(mailbox=settings.masked())
    box = IMAPMailbox(settings).open()
    try:
        row = db.execute(
            "SELECT uidvalidity, last_uid, done_uids FROM mailbox_state WHERE mailbox = ?", [key]
        ).fetchone()
        last_uid, pending = 0, []
        if row is not None and row[0] == box.uidvalidity:
            last_uid, pending = row[1], json.loads(row[2])
        if pending:
            # A run that committed but stopped before moving or deleting them.
            summary.removal = box.remove(pending, move_to)
            summary.finished_earlier = len(pending)
            with immediate(db):
                db.execute("UPDATE mailbox_state SET done_uids = '[]' WHERE mailbox = ?", [key])
        uids = box.uids_after(last_uid)
        for start in range(0, len(uids), batch):
            chunk = uids[start : start + batch]
            messages = []
            for uid in chunk:
                data = box.fetch(uid)
                if data is not None:
                    messages.append((f"UID {uid}", data))
            with immediate(db):
                handled = process(db, messages, source="imap", secret=secret, rule=rule, verp=verp)
                done = [int(h.label.split()[1]) for h in handled if h.understood]
                db.execute(
                    """INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, done_uids,
                       updated) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT (mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity,
                       last_uid = excluded.last_uid, done_uids = excluded.done_uids,
                       updated = excluded.updated""",
                    [key, box.uidvalidity, chunk[-1], json.dumps(done), now()],
                )
            summary.handled.extend(handled)
            after_commit()
            summary.removal = box.remove(done, move_to) if done else summary.removal
            summary.removed += len(done)
            with immediate(db):
                db.execute("UPDATE mailbox_state SET done_uids = '[]' WHERE mailbox = ?", [key])
    finally:
        box.close()
    return summary
