"""What a send needs, checked before any connection opens: the campaign, its offers'
composers, the SMTP settings and the envelope's addresses.

The rule: anything that would fail every recipient (a campaign or offer that
does not load, an envelope sender that cannot go in MAIL FROM, a list that
does not exist) is found here, once, with the setting or file to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from listkit.audience.lists import get_list
from listkit.config import SMTPSettings
from listkit.errors import (
    ConfigError,
)
from listkit.mail.compose import Composer
from listkit.mail.offers import load_offer
from listkit.send.campaigns import (
    Campaign,
    load_campaign,
)
from listkit.send.smtp import path as smtp_path
from listkit.workspace import Workspace


@dataclass
class Prepared:
    campaign: Campaign
    composer: Composer
    smtp: SMTPSettings
    sender_address: str
    bounce_address: str | None = None
    # One composer per offer the campaign sends (its variants), by offer slug.
    composers: dict[str, Composer] = field(default_factory=dict)

    @property
    def expires(self) -> str | None:
        """The earliest expiry among the campaign's offers."""
        dates = [c.offer.expires for c in self.composers.values() if c.offer.expires]
        return min(dates) if dates else None


def prepare(ws: Workspace, slug: str, *, recorded: bool = True) -> Prepared:
    """Everything a send needs, checked before any connection is opened.

    ``recorded=False`` (test and dry-run messages, which have no delivery) links
    straight to the shop's tracked URLs: a click link of a token that is in no
    delivery would answer 404.
    """
    return prepare_campaign(ws, load_campaign(ws.campaigns_dir, slug), recorded=recorded)


def prepare_campaign(ws: Workspace, campaign: Campaign, *, recorded: bool = True) -> Prepared:
    """``prepare`` for a campaign already loaded (a step of a sequence is one)."""
    slug = campaign.slug
    offer = load_offer(ws.offers_dir, campaign.offer)
    tracked = ws.settings.track_clicks and recorded
    composer = Composer(
        offer, ws.settings, campaign=slug, offers_dir=ws.offers_dir, track_clicks=tracked
    )
    composers = {offer.slug: composer}
    for variant in campaign.variants:
        if variant not in composers:
            composers[variant] = Composer(
                load_offer(ws.offers_dir, variant),
                ws.settings,
                campaign=slug,
                offers_dir=ws.offers_dir,
                track_clicks=tracked,
            )
    smtp = ws.settings.smtp()
    _name, sender_address = ws.settings.sender_address()
    try:
        # Checked here, once: found per message, it would fail every recipient.
        smtp_path(sender_address, True)
    except ValueError:
        raise ConfigError(
            f"LISTKIT_FROM: {sender_address!r} cannot be the envelope sender (MAIL FROM): a "
            "space, a control character, < or > is not allowed there; use a plain address "
            "such as you@example.com"
        ) from None
    for list_slug in (*campaign.lists, *campaign.exclude_lists):
        get_list(ws.db, list_slug)
    bounces = ws.settings.bounce_address
    return Prepared(campaign, composer, smtp, sender_address, bounces, composers)
