"""Relay webhooks: SES through SNS (signed), Postmark (Basic auth), Mailgun (HMAC).

No test reaches the internet: the SNS signing certificate comes from a test CA
(trustme) through an injected fetcher, and messages are signed here with its key.
"""

import base64
import hashlib
import hmac
import json
import logging
import time

import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.testclient import TestClient

from listkit.db import now
from listkit.inbox.relays import sns_string_to_sign
from listkit.web import create_app
from tests.world import World

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem"
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def signer():
    # SNS signs with RSA (PKCS#1 v1.5).
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("sns.us-east-1.amazonaws.com", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    return cert.cert_chain_pems[0].bytes(), key


class Fetcher:
    def __init__(self, certificate: bytes):
        self.certificate = certificate
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.certificate if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"


@pytest.fixture
def setup(ws, workspace, signer, monkeypatch):
    monkeypatch.setenv("LISTKIT_SES_TOPIC_ARN", TOPIC)
    monkeypatch.setenv("LISTKIT_POSTMARK_WEBHOOK_AUTH", "postmark:hook-secret")
    monkeypatch.setenv("LISTKIT_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    from listkit.workspace import Workspace

    web_ws = Workspace(workspace)
    app = create_app(web_ws)
    fetcher = Fetcher(signer[0])
    app.state.relay_fetch = fetcher
    world = World(ws.db)
    cid = world.campaign("launch")
    d = world.deliver(cid, "gone@example.net", "blog", sent_at=now())
    token = d["token"]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, fetcher, token, cid
    web_ws.close()


def sign(message: dict, key, version: str = "1") -> dict:
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def ses_bounce(token: str, email: str = "gone@example.net", feedback: str = "fb-1") -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": feedback,
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": email,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-11-30T10:00:00.000Z",
        },
        "mail": {
            "timestamp": "2026-11-30T09:59:58.000Z",
            "source": f"bounces+{token}@example.com",
            "messageId": "0100019372a0e9aa-1a2b3c4d-000000",
            "destination": [email],
            "commonHeaders": {"messageId": f"<{token}.lk@example.com>"},
        },
    }


def notification(payload: dict, message_id: str = "sns-1") -> dict:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(payload),
        "Timestamp": "2026-11-30T10:00:01.000Z",
    }


def suppressions(client):
    db = client.app.state.ws.db
    return db.execute("SELECT email, reason FROM suppressions ORDER BY email").fetchall()


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_ses_bounce_suppresses_the_address(setup, signer, version):
    client, fetcher, token, _cid = setup
    r = client.post(
        "/relays/ses", content=json.dumps(sign(notification(ses_bounce(token)), signer[1], version))
    )
    assert (r.status_code, r.text) == (200, "ok: 1\n")
    assert suppressions(client) == [("gone@example.net", "hard_bounce")]
    detail = client.app.state.ws.db.execute(
        "SELECT json_extract(detail, '$.matched_by') FROM events WHERE kind = 'bounce'"
    ).fetchall()
    assert detail == [("verp",)]
    assert fetcher.urls == [CERT_URL]


def test_the_signing_certificate_is_fetched_once_and_a_repeat_has_no_second_effect(setup, signer):
    client, fetcher, token, _cid = setup
    body = json.dumps(sign(notification(ses_bounce(token)), signer[1]))
    assert client.post("/relays/ses", content=body).status_code == 200
    assert client.post("/relays/ses", content=body).status_code == 200
    assert fetcher.urls == [CERT_URL]
    events = client.app.state.ws.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert events == 1


def test_an_ses_complaint_unsubscribes_and_suppresses(setup, signer):
    client, _fetcher, token, _cid = setup
    payload = {
        "notificationType": "Complaint",
        "complaint": {
            "feedbackId": "fb-c",
            "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": "gone@example.net"}],
        },
        "mail": {"source": f"bounces+{token}@example.com", "messageId": "x"},
    }
    r = client.post("/relays/ses", content=json.dumps(sign(notification(payload), signer[1], "2")))
    assert r.status_code == 200
    assert suppressions(client) == [("gone@example.net", "complaint")]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: {**m, "Message": m["Message"].replace("5.1.1", "5.1.2")},
        lambda m: {**m, "Signature": base64.b64encode(b"x" * 256).decode()},
        lambda m: {**m, "SignatureVersion": "3"},
    ],
)
def test_a_tampered_or_unsigned_sns_message_is_refused_and_changes_nothing(setup, signer, tamper):
    client, _fetcher, token, _cid = setup
    message = tamper(sign(notification(ses_bounce(token)), signer[1]))
    r = client.post("/relays/ses", content=json.dumps(message))
    assert r.status_code == 403 and r.text.startswith("Refused: ")
    assert suppressions(client) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/SimpleNotificationService.pem",
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
    ],
)
def test_a_certificate_from_anywhere_but_sns_is_never_fetched(setup, signer, url):
    client, fetcher, token, _cid = setup
    message = sign(notification(ses_bounce(token)), signer[1])
    message["SigningCertURL"] = url
    r = client.post("/relays/ses", content=json.dumps(message))
    assert r.status_code == 403
    assert fetcher.urls == []


def test_a_message_of_another_topic_is_refused(setup, signer):
    client, _fetcher, token, _cid = setup
    message = notification(ses_bounce(token))
    message["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:other"
    r = client.post("/relays/ses", content=json.dumps(sign(message, signer[1])))
    assert (r.status_code, r.text) == (403, "Refused: the topic is not LISTKIT_SES_TOPIC_ARN.\n")
    assert suppressions(client) == []


def subscription(subscribe_url: str) -> dict:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "sub-1",
        "Token": "2336412f37f",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-30T10:00:00.000Z",
    }


def test_a_subscription_is_confirmed_only_through_an_sns_url(setup, signer):
    client, fetcher, _token, _cid = setup
    good = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37f"
    r = client.post("/relays/ses", content=json.dumps(sign(subscription(good), signer[1])))
    assert (r.status_code, r.text) == (200, "subscribed\n")
    assert fetcher.urls == [CERT_URL, good]
    bad = "https://attacker.example/?Action=ConfirmSubscription"
    r = client.post("/relays/ses", content=json.dumps(sign(subscription(bad), signer[1])))
    assert r.status_code == 403
    assert fetcher.urls == [CERT_URL, good]


def postmark_bounce(kind="HardBounce", record="Bounce", email="gone@example.net", id_=42):
    return {
        "RecordType": record,
        "ID": id_,
        "Type": kind,
        "TypeCode": 1,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "shop@example.com",
        "BouncedAt": "2026-11-30T10:00:00Z",
    }


def basic(user_password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def test_postmark_needs_the_credentials_of_its_url(setup):
    client, *_ = setup
    body = json.dumps(postmark_bounce())
    r = client.post("/relays/postmark", content=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="listkit"'
    r = client.post("/relays/postmark", content=body, headers=basic("postmark:wrong"))
    assert r.status_code == 401 and "hook-secret" not in r.text
    assert suppressions(client) == []
    r = client.post("/relays/postmark", content=body, headers=basic("postmark:hook-secret"))
    assert (r.status_code, r.text) == (200, "ok: 1\n")
    assert suppressions(client) == [("gone@example.net", "hard_bounce")]
    matched = client.app.state.ws.db.execute(
        "SELECT json_extract(detail, '$.matched_by') FROM events"
    ).fetchall()
    assert matched == [("recipient",)]


def test_postmark_soft_bounces_count_and_spam_complaints_unsubscribe(setup):
    client, *_ = setup
    auth = basic("postmark:hook-secret")
    client.post("/relays/postmark", content=json.dumps(postmark_bounce("SoftBounce")), headers=auth)
    assert suppressions(client) == []
    complaint = postmark_bounce("SpamComplaint", "SpamComplaint", id_=43)
    client.post("/relays/postmark", content=json.dumps(complaint), headers=auth)
    assert suppressions(client) == [("gone@example.net", "complaint")]


def mailgun_event(token: str, *, timestamp=None, mg_token="a8ce0edb2dd8301dee6c2405235584e4"):
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + mg_token).encode(), hashlib.sha256
    ).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": mg_token, "signature": signature},
        "event-data": {
            "event": "failed",
            "severity": "permanent",
            "reason": "bounce",
            "id": "G9Bn5sl1TC6nu79C8C0bwg",
            "recipient": "gone@example.net",
            "envelope": {"sender": f"bounces+{token}@example.com"},
            "message": {"headers": {"message-id": f"{token}.lk@example.com"}},
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "description": "",
            },
        },
    }


def test_a_signed_mailgun_failure_suppresses_and_its_token_is_accepted_once(setup):
    client, _fetcher, token, _cid = setup
    body = json.dumps(mailgun_event(token))
    r = client.post("/relays/mailgun", content=body)
    assert (r.status_code, r.text) == (200, "ok: 1\n")
    assert suppressions(client) == [("gone@example.net", "hard_bounce")]
    r = client.post("/relays/mailgun", content=body)
    assert (r.status_code, r.text) == (406, "Refused: this token was seen before.\n")


def test_a_mailgun_event_with_a_bad_signature_or_an_old_timestamp_is_refused(setup):
    client, _fetcher, token, _cid = setup
    forged = mailgun_event(token)
    forged["signature"]["signature"] = "0" * 64
    r = client.post("/relays/mailgun", content=json.dumps(forged))
    assert (r.status_code, r.text) == (403, "Refused: the Mailgun signature does not match.\n")
    old = mailgun_event(token, timestamp=int(time.time()) - 3600)
    r = client.post("/relays/mailgun", content=json.dumps(old))
    assert r.text == "Refused: the Mailgun timestamp is outside the replay window.\n"
    assert suppressions(client) == []


def test_a_relay_without_its_setting_has_no_endpoint(ws, workspace):
    from listkit.workspace import Workspace

    web_ws = Workspace(workspace)
    with TestClient(create_app(web_ws), raise_server_exceptions=False) as client:
        for path in ("/relays/ses", "/relays/postmark", "/relays/mailgun"):
            assert client.post(path, content=b"{}").status_code == 404
    web_ws.close()


def test_relay_secrets_are_masked_in_listkit_config(run, monkeypatch):
    monkeypatch.setenv("LISTKIT_POSTMARK_WEBHOOK_AUTH", "postmark:hook-secret")
    monkeypatch.setenv("LISTKIT_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    output = run("config").output
    assert "hook-secret" not in output and MAILGUN_KEY not in output


def test_a_real_listkit_serve_takes_a_mailgun_webhook_and_its_log_holds_no_secret(ws, workspace):
    import urllib.error
    import urllib.request

    from tests.web_server import serve

    world = World(ws.db)
    cid = world.campaign("launch")
    d = world.deliver(cid, "gone@example.net", "blog", sent_at=now())
    token = d["token"]
    body = json.dumps(mailgun_event(token)).encode()
    with serve(workspace, env={"LISTKIT_MAILGUN_SIGNING_KEY": MAILGUN_KEY}) as base:
        request = urllib.request.Request(base + "/relays/mailgun", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            assert (r.status, r.read()) == (200, b"ok: 1\n")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert e.value.code == 406
    reason = ws.db.execute(
        "SELECT reason FROM suppressions WHERE key = 'gone@example.net'"
    ).fetchone()
    assert reason == ("hard_bounce",)
    log = (workspace / "serve.log").read_text()
    assert "POST /relays/mailgun 200" in log and "POST /relays/mailgun 406" in log
    assert MAILGUN_KEY not in log and token not in log


@pytest.mark.parametrize(
    "field, value",
    [("envelope", 5), ("message", "x"), ("delivery-status", 5)],
)
def test_a_signed_mailgun_event_of_an_unexpected_shape_is_a_400_that_changes_nothing(
    setup, field, value
):
    client, _fetcher, token, _cid = setup
    event = mailgun_event(token)
    event["event-data"][field] = value
    r = client.post("/relays/mailgun", content=json.dumps(event))
    assert (r.status_code, r.text) == (400, "Refused: the event has an unexpected shape.\n")
    assert suppressions(client) == []
    # The token was not used up: the relay's retry of a corrected event is taken.
    r = client.post("/relays/mailgun", content=json.dumps(mailgun_event(token)))
    assert (r.status_code, r.text) == (200, "ok: 1\n")


@pytest.mark.parametrize("field, value", [("Email", ["x"]), ("Content", 7)])
def test_a_postmark_event_of_an_unexpected_shape_is_a_400_that_changes_nothing(setup, field, value):
    client, *_ = setup
    event = postmark_bounce("SpamComplaint", "SpamComplaint")
    event[field] = value
    r = client.post(
        "/relays/postmark", content=json.dumps(event), headers=basic("postmark:hook-secret")
    )
    assert (r.status_code, r.text) == (400, "Refused: the event has an unexpected shape.\n")
    assert suppressions(client) == []


# --- hostile requests: 400 or 403, never a 500 nor a traceback ---------------------------------

HOSTILE_JSON = {
    "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested objects": b'{"a": ' * 20_000 + b"1" + b"}" * 20_000,
    "nested deeper than any relay sends": b'{"a": ' * 40 + b"1" + b"}" * 40,
    "a 5,000-digit number": b'{"Type": "Notification", "n": ' + b"9" * 5000 + b"}",
    "a 5,000-digit fraction": b'{"Type": "Notification", "n": 0.' + b"9" * 5000 + b"}",
    "NaN": b'{"Type": "Notification", "n": NaN}',
    "not UTF-8": b'{"Type": "\xff"}',
    "not JSON": b"Type=Notification",
}


def no_errors_logged(caplog) -> bool:
    return not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("route", ["/relays/ses", "/relays/mailgun", "/relays/postmark"])
@pytest.mark.parametrize("body", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_json_on_a_relay_route_is_a_400_and_logs_no_error(setup, caplog, route, body):
    client, *_ = setup
    caplog.set_level(logging.DEBUG)
    r = client.post(route, content=body, headers=basic("postmark:hook-secret"))
    assert r.status_code == 400 and r.text.startswith("Bad payload: ")
    assert no_errors_logged(caplog)
    assert suppressions(client) == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("signature", "é" * 64),
        ("signature", "0" * 63),
        ("signature", "g" * 64),
        ("signature", "0" * 5000),
        ("signature", 7),
        ("signature", ["0" * 64]),
        ("timestamp", "١٧٩٤٠٠٠٠٠٠"),
        ("timestamp", "9" * 5000),
        ("timestamp", {"t": 1}),
        ("token", "é"),
        ("token", None),
    ],
)
def test_a_malformed_mailgun_signature_of_any_kind_is_a_403_that_logs_no_error(
    setup, caplog, field, value
):
    client, _fetcher, token, _cid = setup
    caplog.set_level(logging.DEBUG)
    event = mailgun_event(token)
    event["signature"][field] = value
    r = client.post("/relays/mailgun", content=json.dumps(event))
    assert r.status_code == 403 and r.text.startswith("Refused: the Mailgun signature ")
    assert no_errors_logged(caplog)
    assert suppressions(client) == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("Signature", "é" * 344),
        ("Signature", 7),
        ("Signature", "not base64!"),
        ("SigningCertURL", ["https://sns.us-east-1.amazonaws.com/x.pem"]),
        ("SigningCertURL", "https://sns.us-east-1.amazonaws.com:99999/x.pem"),
        ("SignatureVersion", {"v": 1}),
        ("Type", ["Notification"]),
        ("Message", "\ud800"),
    ],
)
def test_a_malformed_sns_signature_of_any_kind_is_a_403_that_logs_no_error(
    setup, signer, caplog, field, value
):
    client, _fetcher, token, _cid = setup
    caplog.set_level(logging.DEBUG)
    message = sign(notification(ses_bounce(token)), signer[1])
    message[field] = value
    r = client.post("/relays/ses", content=json.dumps(message))
    assert r.status_code == 403 and r.text.startswith("Refused: ")
    assert no_errors_logged(caplog)
    assert suppressions(client) == []
