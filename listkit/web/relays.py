"""Webhook routes of sending relays: POST /relays/ses, /relays/postmark, /relays/mailgun.

Each is verified by its producer's scheme (see ``listkit.inbox.relays``) before its
body is read, then its events go through ``bounces.apply`` in one write that
commits before the answer. A relay whose setting is unset has no endpoint
(404). Refusals answer 401/403 with the reason, never a secret.
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from listkit import signing
from listkit.db import now
from listkit.errors import InputError
from listkit.inbox import relays
from listkit.inbox.bounces import Report, apply
from listkit.payloads import loads_object
from listkit.web.common import json_object, read_body

MAX_FETCH = 64 * 1024


def fetch_https(url: str) -> bytes:
    """GET an SNS URL (its certificate, a SubscribeURL); callers check the URL first."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(MAX_FETCH)


def _fetcher(request: Request):
    return getattr(request.app.state, "relay_fetch", None) or fetch_https


def _certificate(request: Request, url: str) -> bytes:
    cache = request.app.state.__dict__.setdefault("_sns_certificates", {})
    if url not in cache:
        cache[url] = _fetcher(request)(url)
    return cache[url]


def _settings(request: Request):
    return request.app.state.ws.settings


async def _apply(request: Request, reports: list[Report], source: str, seen=None) -> int:
    rule = _settings(request).soft_bounces
    secret = _settings(request).secret_key()

    def write(db) -> int:
        if seen is not None:
            kind, key = seen
            stale = (datetime.now(UTC) - timedelta(days=1)).isoformat()
            db.execute("DELETE FROM webhook_seen WHERE source = ? AND at < ?", [kind, stale])
            inserted = db.execute(
                "INSERT INTO webhook_seen (source, id, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [kind, key, now()],
            ).rowcount
            if not inserted:
                return -1
        n = 0
        for report in reports:
            n += len(apply(db, report, source=source, secret=secret, rule=rule))
        return n

    return await request.app.state.db.write(write)


def _reports(parse, event) -> list[Report]:
    """The reports a verified event carries; 400 when it is not of the producer's shape
    (a field of another type), rather than a 500 the relay would retry for ever."""
    try:
        return parse(event)
    except (TypeError, AttributeError, KeyError, ValueError):
        raise HTTPException(400, "Refused: the event has an unexpected shape.") from None


def _refuse(status: int, e: relays.WebhookRefused) -> HTTPException:
    return HTTPException(status, f"Refused: {e}.")


async def ses(request: Request) -> Response:
    topics = _settings(request).ses_topic_arn
    if not topics:
        raise HTTPException(404, "Not found.")
    message = json_object(await read_body(request))
    try:
        await run_in_threadpool(relays.verify_sns, message, lambda u: _certificate(request, u))
    except relays.WebhookRefused as e:
        raise _refuse(403, e) from None
    allowed = {t.strip() for t in topics.split(",") if t.strip()}
    if message.get("TopicArn") not in allowed:
        raise HTTPException(403, "Refused: the topic is not LISTKIT_SES_TOPIC_ARN.")
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        url = message.get("SubscribeURL") or ""
        if not relays.is_sns_url(url):
            raise HTTPException(403, "Refused: SubscribeURL is not an SNS URL.")
        await run_in_threadpool(_fetcher(request), url)
        return PlainTextResponse("subscribed\n")
    if kind != "Notification":
        return PlainTextResponse("ok\n")
    try:
        notification = loads_object(message["Message"])
    except InputError:
        return PlainTextResponse("ignored: not an SES notification\n")
    n = await _apply(request, _reports(relays.ses_reports, notification), "ses")
    return PlainTextResponse(f"ok: {n}\n")


async def postmark(request: Request) -> Response:
    expected = _settings(request).postmark_webhook_auth
    if not expected:
        raise HTTPException(404, "Not found.")
    if not signing.basic_auth_matches(request.headers.get("authorization"), expected):
        raise HTTPException(
            401, "Credentials required.", headers={"WWW-Authenticate": 'Basic realm="listkit"'}
        )
    event = json_object(await read_body(request))
    n = await _apply(request, _reports(relays.postmark_reports, event), "postmark")
    return PlainTextResponse(f"ok: {n}\n")


async def mailgun(request: Request) -> Response:
    key = _settings(request).mailgun_signing_key
    if not key:
        raise HTTPException(404, "Not found.")
    data = json_object(await read_body(request))
    try:
        signature = data.get("signature")
        if not isinstance(signature, dict):
            raise relays.WebhookRefused("no signature")
        token = relays.verify_mailgun(signature, key)
    except relays.WebhookRefused as e:
        raise _refuse(403, e) from None
    event = data.get("event-data")
    reports = _reports(relays.mailgun_reports, event) if isinstance(event, dict) else []
    n = await _apply(request, reports, "mailgun", seen=("mailgun", token))
    if n < 0:
        # 406 tells Mailgun not to retry: this signed request was handled already.
        raise HTTPException(406, "Refused: this token was seen before.")
    return PlainTextResponse(f"ok: {n}\n")


routes = [
    Route("/relays/ses", ses, methods=["POST"]),
    Route("/relays/postmark", postmark, methods=["POST"]),
    Route("/relays/mailgun", mailgun, methods=["POST"]),
]
