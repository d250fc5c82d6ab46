"""Clicks on tracked links: who clicked what, and where the link really goes.

The rules: the redirect goes to the link the offer itself contains for that
delivery (its UTM parameters and token added), never to a URL taken from the
request; a ``HEAD``, a known scanner's user agent, or a hit within
``BOT_SECONDS`` of the message being sent is recorded as ``click_bot``, and
only ``click`` counts as a person's click in reports and attribution.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime

from listkit.audience.deliveries import delivery_id
from listkit.audience.subscribers import SUBSCRIBER_COLUMNS, subscriber_dict
from listkit.config import Settings
from listkit.db import iso
from listkit.mail.compose import Composer
from listkit.mail.offers import load_offer
from listkit.vocab import CLICK, CLICK_BOT

# A hit this soon after sending is a mail scanner following every link.
BOT_SECONDS = 10
# User agents of link scanners and previewers (security gateways, chat and
# social unfurlers, crawlers, command-line tools).
BOT_AGENTS = re.compile(
    r"bot\b|bot/|crawler|spider|slurp|preview|scanner|scan\b|proofpoint|mimecast|barracuda"
    r"|safelinks|urldefense|messagelabs|symantec|fortiguard|trendmicro|sophos|ironport"
    r"|google-safety|googleimageproxy|yahoomailproxy|facebookexternalhit|slackbot|discordbot"
    r"|whatsapp|telegrambot|skypeuripreview|python-|curl/|wget/|go-http-client|headless",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def is_bot_agent(agent: str) -> bool:
    """Whether a User-Agent names a scanner, a link preview or a script. Cached:
    the same few hundred agents make most clicks, and the pattern is long."""
    return BOT_AGENTS.search(agent) is not None


def click_kind(method: str, agent: str | None, sent_at: str | None, at: str) -> str:
    """``click`` for what looks like a person, ``click_bot`` for a scanner or prefetch."""
    if method == "HEAD" or not agent or is_bot_agent(agent):
        return CLICK_BOT
    if sent_at:
        seconds = (datetime.fromisoformat(at) - datetime.fromisoformat(sent_at)).total_seconds()
        if seconds < BOT_SECONDS:
            return CLICK_BOT
    return CLICK


def store_links(db, campaign_id: int, links: dict[str, str]) -> None:
    for link, url in links.items():
        db.execute(
            "INSERT INTO links (campaign_id, link, url) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [campaign_id, link, url],
        )


def delivery_for_click(db, secret: bytes, token: str) -> dict | None:
    """What a click needs of its delivery: campaign, offer (its variant's, in an offer
    test), list, subscriber, when sent."""
    row = db.execute(
        f"""SELECT d.id, d.campaign_id, c.slug, coalesce(d.variant, c.offer), l.slug, l.title,
                  d.sent_unix,
                  {SUBSCRIBER_COLUMNS}
           FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
           JOIN lists l ON l.id = d.list_id JOIN subscribers s ON s.id = d.subscriber_id
           WHERE d.id = ?""",
        [delivery_id(db, secret, token)],
    ).fetchone()
    if row is None:
        return None
    did, cid, campaign, offer, list_slug, list_title, sent_at, *subscriber = row
    return {
        "id": did,
        "campaign_id": cid,
        "campaign": campaign,
        "offer": offer,
        "list": list_slug,
        "list_title": list_title,
        "sent_at": iso(sent_at),
        "token": token,
        "subscriber": subscriber_dict(*subscriber),
    }


def links_as_rendered(settings: Settings, offers_dir, delivery: dict) -> dict[str, str]:
    """Render the delivery's offer again and collect the links it tracks: {link id: url}."""
    offer = load_offer(offers_dir, delivery["offer"])
    composer = Composer(
        offer, settings, campaign=delivery["campaign"], offers_dir=offers_dir, track_clicks=True
    )
    composer.compose(
        subscriber=delivery["subscriber"],
        list_slug=delivery["list"],
        list_title=delivery["list_title"],
        token=delivery["token"],
    )
    return dict(composer.links)


def record_click(
    db, delivery_id: int, kind: str, at: str, url: str, ip: str | None, agent: str | None
) -> None:
    db.execute(
        "INSERT INTO events (delivery_id, kind, at, url, ip, agent) VALUES (?, ?, ?, ?, ?, ?)",
        [delivery_id, kind, at, url, ip, (agent or "")[:512] or None],
    )


def record_known_click(
    db,
    secret: bytes,
    token: str,
    link: str,
    method: str,
    agent: str | None,
    ip: str | None,
    at: str,
) -> dict | None:
    """One step for the common case: find the delivery and the link's stored destination
    and record the click. None for an unknown token; ``url`` None (nothing recorded)
    when the link is not stored yet and must be resolved by rendering the offer."""
    delivery = db.execute(
        """SELECT d.id, d.campaign_id, c.slug, l.slug, d.sent_unix, k.url
           FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id
           JOIN lists l ON l.id = d.list_id
           LEFT JOIN links k ON k.campaign_id = d.campaign_id AND k.link = ?
           WHERE d.id = ?""",
        [link, delivery_id(db, secret, token)],
    ).fetchone()
    if delivery is None:
        return None
    did, cid, campaign, list_slug, sent_at, url = delivery
    result = {"id": did, "campaign_id": cid, "campaign": campaign, "list": list_slug, "url": url}
    if url is not None:
        record_click(db, did, click_kind(method, agent, iso(sent_at), at), at, url, ip, agent)
    return result
