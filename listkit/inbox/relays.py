"""Bounce and complaint webhooks of sending relays: Amazon SES (through SNS), Postmark, Mailgun.

The rule: a webhook is verified by its producer's own scheme before its body
is read as anything (SNS: the RSA signature over the canonical string, with a
certificate fetched only from an ``https://sns.<region>.amazonaws.com/`` URL,
and the topic; Postmark: the Basic credentials of the URL; Mailgun: HMAC-SHA256
of timestamp and token, within ``signing.REPLAY_WINDOW``, each token once;
the checks themselves are ``listkit.signing``'s). Then each
event becomes a ``bounces.Report`` and goes through the same matching and
effects as a bounce read from a mailbox. Pure functions: no database, no
network (the certificate fetcher is passed in).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from listkit import signing
from listkit.errors import ListkitError
from listkit.inbox.bounces import COMPLAINT, Recipient, Report
from listkit.mail.message_ids import returned_message_id, token_of
from listkit.mail.replies import HARD, IGNORED, SOFT, classify
from listkit.mail.verp import token_from_address


class WebhookRefused(ListkitError):
    """A webhook that failed its producer's verification; the message says why."""


# ---------------------------------------------------------------------------
# Amazon SNS

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")
_SNS_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_KEYS["UnsubscribeConfirmation"] = _SNS_KEYS["SubscriptionConfirmation"]


def is_sns_url(url: str, *, pem: bool = False) -> bool:
    """True for ``https://sns.<region>.amazonaws.com/...`` (and ``.pem`` when asked)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL, or a port out of range
        return False
    if parts.scheme != "https" or port not in (None, 443) or parts.username:
        return False
    if not _SNS_HOST.fullmatch(parts.hostname or ""):
        return False
    return parts.path.endswith(".pem") if pem else True


def sns_string_to_sign(message: dict) -> bytes:
    kind = message.get("Type")
    if not isinstance(kind, str) or kind not in _SNS_KEYS:
        raise WebhookRefused("unknown SNS message type")
    out = []
    for key in _SNS_KEYS[kind]:
        if key == "Subject" and message.get(key) is None:
            continue
        value = message.get(key)
        if not isinstance(value, str):
            raise WebhookRefused(f"SNS message without {key}")
        out.append(f"{key}\n{value}\n")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the JSON): nobody signed it
        raise WebhookRefused("the SNS message is not valid Unicode text") from None


def verify_sns(message: dict, fetch_certificate: Callable[[str], bytes]) -> None:
    """Raise WebhookRefused unless ``message`` carries a valid SNS signature."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    version = message.get("SignatureVersion")
    algorithms = {"1": hashes.SHA1(), "2": hashes.SHA256()}
    algorithm = algorithms.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise WebhookRefused('unsupported SNS SignatureVersion (listkit reads "1" and "2")')
    url = message.get("SigningCertURL") or message.get("SigningCertUrl") or ""
    if not is_sns_url(url, pem=True):
        raise WebhookRefused("SigningCertURL is not an https://sns.<region>.amazonaws.com/ .pem")
    given = message.get("Signature")
    try:
        if not isinstance(given, str) or not given.isascii():
            raise ValueError
        signature = base64.b64decode(given, validate=True)
    except ValueError:
        raise WebhookRefused("the SNS Signature is not base64") from None
    data = sns_string_to_sign(message)
    try:
        cert = x509.load_pem_x509_certificate(fetch_certificate(url))
    except ValueError:
        raise WebhookRefused("the SNS signing certificate cannot be read") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRefused("the SNS signing certificate has no RSA key")
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise WebhookRefused("the SNS signature does not match") from None


def ses_reports(notification: dict) -> list[Report]:
    """Reports from one SES notification (``notificationType`` or event ``eventType``)."""
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") or {}
    token = token_from_address(mail.get("source"))
    headers = mail.get("commonHeaders") or {}
    message_id = headers.get("messageId")
    if message_id is None:
        for h in mail.get("headers") or []:
            if str(h.get("name", "")).lower() == "message-id":
                message_id = h.get("value")
    recipients: list[Recipient] = []
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        identity = f"ses:{bounce.get('feedbackId') or mail.get('messageId')}"
        bounce_type = bounce.get("bounceType")
        sub_type = bounce.get("bounceSubType")
        for r in bounce.get("bouncedRecipients") or []:
            status = r.get("status")
            diagnostic = r.get("diagnosticCode")
            if bounce_type == "Permanent" and sub_type in ("General", "NoEmail"):
                verdict = classify(None, diagnostic, status=status)
                outcome = HARD if verdict != SOFT or not status else SOFT
                if sub_type == "NoEmail":
                    outcome = HARD
            elif bounce_type == "Permanent" and sub_type == "Suppressed":
                outcome = HARD  # on SES's own suppression list: it will never deliver
            else:
                outcome = SOFT
            text = f"{bounce_type}/{sub_type}" + (f": {diagnostic}" if diagnostic else "")
            recipients.append(Recipient(r.get("emailAddress") or "", outcome, status, text))
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        identity = f"ses:{complaint.get('feedbackId') or mail.get('messageId')}"
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        outcome = COMPLAINT if feedback in ("abuse", "other") else IGNORED
        for r in complaint.get("complainedRecipients") or []:
            recipients.append(
                Recipient(r.get("emailAddress") or "", outcome, None, f"complaint {feedback}")
            )
    else:
        return []
    kind_name = "complaint" if kind == "Complaint" else "dsn"
    return [
        Report(
            known_by="relay",
            kind=kind_name,
            identity=identity,
            format="ses",
            recipients=recipients,
            token=token,
            message_id=message_id,
            message_token=token_of(message_id),
        )
    ]


# ---------------------------------------------------------------------------
# Postmark

POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
POSTMARK_SOFT = {"Transient", "SoftBounce", "DnsError", "Blocked", "DMARCPolicy", "Undeliverable"}


def postmark_reports(event: dict) -> list[Report]:
    record = event.get("RecordType")
    kind = event.get("Type")
    if record == "SpamComplaint" or kind == "SpamComplaint":
        outcome, report_kind = COMPLAINT, "complaint"
    elif record == "Bounce" and kind in POSTMARK_HARD:
        outcome, report_kind = HARD, "dsn"
    elif record == "Bounce" and kind in POSTMARK_SOFT:
        outcome, report_kind = SOFT, "dsn"
    elif record == "Bounce":
        outcome, report_kind = IGNORED, "dsn"  # auto-responders, challenges and the like
    else:
        return []
    details = event.get("Details") or event.get("Description")
    email = event.get("Email") or ""
    if not isinstance(email, str):
        raise TypeError("Email is not a string")
    recipient = Recipient(email, outcome, None, f"{kind}: {details}"[:500])
    # Postmark's own MessageID is not ours; the raw bounce (Content), when kept, has ours.
    _, message_token = returned_message_id(event.get("Content") or "")
    return [
        Report(
            known_by="relay",
            kind=report_kind,
            identity=f"postmark:{event.get('ID')}",
            format="postmark",
            recipients=[recipient],
            message_token=message_token,
        )
    ]


# ---------------------------------------------------------------------------
# Mailgun

_MAILGUN_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAILGUN_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def verify_mailgun(signature: dict, key: str, now: float | None = None) -> str:
    """Check a Mailgun webhook signature; returns its token (to be seen once).

    Every part must have its shape (ASCII digits, a printable ASCII token, 64
    hex digits) before anything is computed from it: anything else is refused
    as malformed, whatever its type or length."""
    timestamp = signature.get("timestamp")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    token, given = signature.get("token"), signature.get("signature")
    if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
        raise WebhookRefused("the Mailgun signature is incomplete")
    if not (
        _MAILGUN_TIMESTAMP.fullmatch(timestamp)
        and _MAILGUN_TOKEN.fullmatch(token)
        and _HEX_SHA256.fullmatch(given)
    ):
        raise WebhookRefused("the Mailgun signature is malformed")
    if not signing.same(signing.hmac_hex(key, (timestamp + token).encode()), given.lower()):
        raise WebhookRefused("the Mailgun signature does not match")
    if not signing.fresh(timestamp, now):
        raise WebhookRefused("the Mailgun timestamp is outside the replay window")
    return token


def mailgun_reports(data: dict) -> list[Report]:
    event = data.get("event")
    recipient = data.get("recipient") or ""
    headers = (data.get("message") or {}).get("headers") or {}
    message_id = headers.get("message-id")
    token = token_from_address((data.get("envelope") or {}).get("sender"))
    if event == "complained":
        outcome, kind, detail = COMPLAINT, "complaint", "complained"
    elif event == "failed":
        status = data.get("delivery-status") or {}
        code = status.get("code")
        text = " ".join(
            str(x) for x in (code, status.get("message"), status.get("description")) if x
        )
        if data.get("severity") == "temporary":
            outcome = SOFT
        elif data.get("reason") == "suppress-bounce":
            outcome = HARD  # Mailgun's own bounce list: it will not try again
        else:
            outcome = classify(None, text or None, status=status.get("enhanced-code"))
        kind, detail = "dsn", f"{data.get('severity')} {data.get('reason')}: {text}"
    else:
        return []
    return [
        Report(
            known_by="relay",
            kind=kind,
            identity=f"mailgun:{data.get('id')}",
            format="mailgun",
            recipients=[Recipient(recipient, outcome, None, detail[:500])],
            token=token,
            message_id=message_id,
            message_token=token_of(message_id),
        )
    ]
