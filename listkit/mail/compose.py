"""Composing one recipient's message: render the offer, then assemble the MIME bytes.

``Composer`` is built once per campaign (settings checked, templates compiled,
constant headers formatted) and ``compose`` is called per recipient by the
sender, the dry run, ``offers check`` and ``offers preview``.

The rule: every message carries the postal address and an unsubscribe link in
its body; when an offer's templates leave either out, a footer adds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from listkit.config import Settings
from listkit.errors import ConfigError, HeaderInjection, TemplateError
from listkit.mail.dkim import signer_for
from listkit.mail.message_ids import message_id
from listkit.mail.mime import MessageBuilder, Parts, check_header
from listkit.mail.offers import Offer, OfferTemplates, subscriber_context
from listkit.mail.tracking import (
    click_url,
    link_id,
    personal_coupon,
    track,
    unsubscribe_url,
)

# Where the token goes in a tracked link (``Composer._tracked``): letters and
# digits, which URL encoding leaves as they are.
_STAND_IN = "LKSTANDINTOKEN0"
_TRACKED_LINKS_KEPT = 256  # links cut once per campaign and list, at the most

NEEDED = ("LISTKIT_FROM", "LISTKIT_POSTAL_ADDRESS", "LISTKIT_BASE_URL", "LISTKIT_SECRET")


@dataclass(frozen=True)
class Composed:
    message_id: str
    data: bytes
    subject: str
    text: str
    html: str | None
    coupon: str | None  # the personal coupon, when the templates used it
    leftover: str | None = None  # template syntax left in the output, as a message


class Composer:
    """Everything needed to build one campaign's messages, prepared once."""

    def __init__(
        self,
        offer: Offer,
        settings: Settings,
        *,
        campaign: str,
        offers_dir: Path,
        track_clicks: bool = False,
    ):
        settings.require(*NEEDED)
        # With click tracking, buy_url and track() point at `listkit serve`, which
        # redirects to the tracked link; ``links`` names every destination rendered.
        self.track_clicks = track_clicks
        self.links: dict[str, str] = {}
        self._link_ids: dict[str, str] = {}  # each destination's name, by its URL
        self._tracked_links: dict[tuple[str, str], list[str] | None] = {}
        sender_name, sender_address = settings.sender_address()
        self.settings = settings
        self.offers_dir = offers_dir
        self.offer = offer
        self.campaign = campaign
        self.base_url = settings.public_base_url()
        self.secret = settings.secret_key()
        self.postal_address = settings.postal_address
        self.token_param = settings.token_param
        self.domain = sender_address.rpartition("@")[2]
        if not self.domain:
            raise ConfigError("LISTKIT_FROM has no domain after the @")
        self.templates = OfferTemplates(offer, offers_dir)
        self.offer_context = offer.as_context()
        self.coupon_base = offer.coupon or offer.slug.upper()
        # DKIM signing, when configured, happens here, where the message is
        # rendered: in the render process for large sends.
        self.signer = signer_for(settings, sender_address)
        self.builder = MessageBuilder(
            sender_name=sender_name,
            sender_address=sender_address,
            list_id=f"{campaign}.{self.domain}",
        )

    def compose(
        self,
        *,
        subscriber: dict,
        list_slug: str,
        list_title: str | None,
        token: str,
        sign: bool = True,
        check_leftovers: bool = True,
    ) -> Composed:
        """The message for one subscriber; TemplateError or HeaderInjection say why not.

        ``sign=False`` leaves out the DKIM signature (checks need no RSA per message);
        ``check_leftovers=False`` skips the search for template syntax left in the
        output (``leftover`` is then None): a send does not report it, `campaigns check`
        and `offers preview` do."""
        who = subscriber["email"]
        used_coupon: list[str] = []

        def track_url(url: str) -> str:
            if self.track_clicks:
                url = str(url)
                link = self._link_ids.get(url)
                if link is None:
                    link = link_id(url)
                    self.links[link] = url
                    if len(self._link_ids) < _TRACKED_LINKS_KEPT:
                        self._link_ids[url] = link
                return click_url(self.base_url, self.secret, token, link)
            pieces = self._tracked(str(url), list_slug)
            if pieces is None:
                return track(
                    str(url),
                    campaign=self.campaign,
                    list_slug=list_slug,
                    token=token,
                    token_param=self.token_param,
                )
            return quoted_token.join(pieces)

        def coupon() -> str:
            code = personal_coupon(self.coupon_base, token)
            used_coupon.append(code)
            return code

        quoted_token = quote(token, safe="")  # as urlencode writes it
        unsubscribe = unsubscribe_url(self.base_url, self.secret, token)
        reader = subscriber_context(subscriber)
        self._check_name(reader["name"], subscriber.get("id"), who)
        context: dict[str, Any] = {
            "subscriber": reader,
            "offer": self.offer_context,
            "campaign": {"slug": self.campaign},
            "list": {"slug": list_slug, "title": list_title},
            "buy_url": track_url(self.offer.url),
            "track": track_url,
            "unsubscribe_url": unsubscribe,
            "postal_address": self.postal_address,
            "personal_coupon": coupon,
        }
        rendered = self.templates.render(context, who)
        subject = rendered.subject
        text = self._text_footer(rendered.text, unsubscribe)
        html = None if rendered.html is None else self._html_footer(rendered.html, unsubscribe)
        mid = message_id(token, self.domain)
        data = self.builder.build(
            Parts(
                to_address=subscriber["email"],
                to_name=reader["name"],
                subject=subject.strip(),
                text=text,
                html=html,
                message_id=mid,
                unsubscribe_url=unsubscribe,
            ),
            who=who,
            list_id=f"{list_slug}.{self.domain}",
            list_name=list_title or list_slug,
        )
        if sign and self.signer is not None:
            data = self.signer.sign(data)
        return Composed(
            message_id=mid,
            data=data,
            subject=subject.strip(),
            text=text,
            html=html,
            coupon=used_coupon[0] if used_coupon else None,
            leftover=self.templates.leftovers(rendered) if check_leftovers else None,
        )

    def _tracked(self, url: str, list_slug: str) -> list[str] | None:
        """``track``'s URL for this campaign and list, cut where the token goes
        (None if the stand-in token is part of the link itself).

        Parsing and re-encoding a link's query is a fifth of composing a
        message, and only the token differs between two recipients of a list:
        each link is tracked once per list, with a stand-in token.
        """
        key = (url, list_slug)
        if key not in self._tracked_links:
            if len(self._tracked_links) >= _TRACKED_LINKS_KEPT:
                return None  # links made from reader data: tracked one by one
            given = (url, list_slug, self.campaign, self.token_param)
            self._tracked_links[key] = (
                None
                if any(_STAND_IN in text for text in given)
                else track(
                    url,
                    campaign=self.campaign,
                    list_slug=list_slug,
                    token=_STAND_IN,
                    token_param=self.token_param,
                ).split(_STAND_IN)
            )
        return self._tracked_links[key]

    @staticmethod
    def _check_name(name: str | None, sid: int | None, who: str) -> None:
        """The To name's check, saying how to mend the name when it is refused.

        The name is on one line already; what can still be refused is an
        encoded-word (``=?...?=``) that decodes to a control character."""
        try:
            check_header(name or "", "To name", who)
        except HeaderInjection as e:
            if not sid:
                raise
            raise HeaderInjection(
                f"{e}; the name of subscriber {sid} hides a control character in an "
                f"encoded-word: set it with `listkit subscribers set {sid} --name 'NEW NAME'`"
            ) from None

    def _text_footer(self, text: str, unsubscribe: str) -> str:
        missing = []
        if self.postal_address not in text:
            missing.append(self.postal_address)
        if unsubscribe not in text:
            missing.append(f"Unsubscribe: {unsubscribe}")
        if not missing:
            return text
        return text.rstrip("\n") + "\n\n-- \n" + "\n".join(missing) + "\n"

    def _html_footer(self, html: str, unsubscribe: str) -> str:
        postal = str(escape(self.postal_address))
        link = str(escape(unsubscribe))
        missing = []
        if postal not in html:
            missing.append(postal)
        if link not in html:
            missing.append(Markup('<a href="{}">Unsubscribe</a>').format(unsubscribe))
        if not missing:
            return html
        footer = (
            '<div style="margin-top:2em;font-size:12px;color:#666;">'
            + "<br>".join(str(m) for m in missing)
            + "</div>"
        )
        at = html.lower().rfind("</body>")
        return html[:at] + footer + html[at:] if at != -1 else html + footer


SAMPLE_SUBSCRIBER = {
    "id": 0,
    "email": "reader@example.com",
    "key": "reader@example.com",
    "name": "Sample Reader",
    "fields": {},
}
PREVIEW_TOKEN = "previewpreview22"


@dataclass(frozen=True)
class Problem:
    subscriber: str
    message: str


def check_offer(
    composer: Composer,
    recipients: Iterable[tuple[dict, str, str | None]],
    *,
    limit: int = 50,
) -> tuple[int, list[Problem]]:
    """Compose for each (subscriber, list slug, list title); (checked, problems).

    Output that still holds template syntax (``{{``, ``{%``) is a problem too:
    a reader would see it.
    """
    checked, problems = 0, []
    for subscriber, list_slug, list_title in recipients:
        checked += 1
        try:
            message = composer.compose(
                subscriber=subscriber,
                list_slug=list_slug,
                list_title=list_title,
                token=PREVIEW_TOKEN,
                sign=False,
            )
        except (TemplateError, HeaderInjection) as e:
            problems.append(Problem(subscriber["email"], str(e)))
        else:
            if message.leftover is not None:
                problems.append(Problem(subscriber["email"], message.leftover))
        if len(problems) >= limit:
            break
    return checked, problems
