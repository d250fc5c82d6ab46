"""Tracked links, delivery tokens, per-recipient coupons and signed unsubscribe URLs.

A delivery's token is derived from its id and LISTKIT_SECRET
(``delivery_token``), never stored; ``audience.deliveries`` reads one back.

Pure functions: no database, no network. The rule: every link a message
carries says which campaign and list it came from (UTM parameters) and which
delivery (the token), in the parameters each shop passes through to its sales
records: Gumroad keeps arbitrary URL parameters (``url_params``) and the UTM
columns, Stripe Payment Links keep ``client_reference_id``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from listkit.config import Settings
from listkit.signing import CONCEALED_BITS, conceal, reveal, same, sign, tag, verify

STRIPE_LINK_HOSTS = ("buy.stripe.com",)
TOKEN_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def new_token() -> str:
    """A random token: 16 characters of lower-case base32 (80 bits). (Deliveries made
    before the ``m020_lean_deliveries`` migration had one; theirs are kept as
    ``legacy_token``.)"""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def is_token(value: str) -> bool:
    return len(value) == 16 and set(value) <= TOKEN_ALPHABET


# A delivery's token is derived from its id, never stored: the first 8 characters
# are the id under a permutation only LISTKIT_SECRET knows (a personal coupon
# carries them, and they name the delivery), the last 8 a check of the id signed
# with the same secret. A token nobody signed names no delivery.
_DELIVERY = "delivery"
_HEAD_BYTES = CONCEALED_BITS // 8


def delivery_token(secret: bytes, delivery_id: int) -> str:
    """The token of delivery ``delivery_id``: 16 characters of lower-case base32."""
    head = conceal(secret, _DELIVERY, delivery_id).to_bytes(_HEAD_BYTES, "big")
    check = tag(secret, _DELIVERY, str(delivery_id), 10 - _HEAD_BYTES)
    return base64.b32encode(head + check).decode("ascii").lower()


def token_bytes(token: str) -> bytes:
    """The bytes a token (or its first 8 characters: 5 bytes) spells; how a legacy
    token is stored."""
    return base64.b32decode(token.upper())


def is_token_head(value: str) -> bool:
    """Whether ``value`` can be a token's first 8 characters (a personal coupon's suffix)."""
    return len(value) == 8 and set(value) <= TOKEN_ALPHABET


def token_text(raw: bytes) -> str:
    """The token the 10 bytes ``raw`` spell (``token_bytes`` undone)."""
    return base64.b32encode(raw).decode("ascii").lower()


def row_token(secret: bytes, delivery_id: int, legacy: bytes | None) -> str:
    """The token a delivery's messages carry: its legacy random one if it has one
    (made before the migration), else the one derived from its id."""
    return token_text(legacy) if legacy is not None else delivery_token(secret, delivery_id)


def delivery_of(secret: bytes, token: str) -> int | None:
    """The id of the delivery a derived token names, or None if ``secret`` did not sign it
    (a legacy token, a forgery, a typo)."""
    token = token.strip().lower()
    if not is_token(token):
        return None
    raw = token_bytes(token)
    delivery_id = coupon_delivery(secret, token[:8])
    check = tag(secret, _DELIVERY, str(delivery_id), 10 - _HEAD_BYTES)
    return delivery_id if same(check, raw[_HEAD_BYTES:]) else None


def coupon_delivery(secret: bytes, head: str) -> int:
    """The delivery id the first 8 characters of a derived token stand for (a
    personal coupon's suffix). Unsigned: any 8 characters stand for some id, which
    the caller finds, or not, among the deliveries."""
    return reveal(secret, _DELIVERY, int.from_bytes(token_bytes(head.lower()), "big"))


def track(
    url: str,
    *,
    campaign: str,
    list_slug: str,
    token: str,
    token_param: str = Settings.token_param.default,
) -> str:
    """``url`` with UTM parameters and the delivery token added.

    Existing parameters and the fragment are kept; existing ``utm_*`` values
    are replaced. Stripe Payment Links also get ``client_reference_id``.
    """
    parts = urlsplit(url)
    ours = {
        "utm_source": "listkit",
        "utm_medium": "email",
        "utm_campaign": campaign,
        "utm_content": list_slug,
        token_param: token,
    }
    if parts.hostname in STRIPE_LINK_HOSTS:
        ours["client_reference_id"] = token
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query = urlencode([*kept, *ours.items()], quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def personal_coupon(base: str, token: str) -> str:
    """A coupon code only this delivery carries: ``LAUNCH30-ABCDEFGH``."""
    return f"{base}-{token[:8].upper()}"


def unsubscribe_url(base_url: str, secret: bytes, token: str) -> str:
    """The signed one-click unsubscribe URL of one delivery."""
    return f"{base_url.rstrip('/')}/u/{token}/{sign(secret, 'unsubscribe', token)}"


def parse_unsubscribe_url(url: str) -> tuple[str, str]:
    """(token, signature) from an unsubscribe URL; ValueError if it is not one."""
    path = urlsplit(url.strip()).path.rstrip("/").split("/")
    if len(path) < 3 or path[-3] != "u":
        raise ValueError(f"not a listkit unsubscribe link: {url}")
    return path[-2], path[-1]


def verify_unsubscribe(secret: bytes, token: str, signature: str) -> bool:
    return verify(secret, "unsubscribe", token, signature)


def link_id(url: str) -> str:
    """A short name for one destination of an offer: the same URL always gets the same
    name, in whichever process renders it (12 characters of base32 of its SHA-256)."""
    digest = hashlib.sha256(url.encode("utf-8")).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()[:12]


def is_link_id(value: str) -> bool:
    return len(value) == 12 and set(value) <= TOKEN_ALPHABET


def click_url(base_url: str, secret: bytes, token: str, link: str) -> str:
    """The signed click-tracking URL of one link in one delivery."""
    return f"{base_url.rstrip('/')}/c/{token}/{link}/{sign(secret, 'click', token + '/' + link)}"


def verify_click(secret: bytes, token: str, link: str, signature: str) -> bool:
    return verify(secret, "click", token + "/" + link, signature)


# Confirmation tokens: "<nonce>.<expiry as Unix seconds>.<signature>".
CONFIRM_DAYS = 7


def confirm_token(secret: bytes, nonce: str, expires: int) -> str:
    value = f"{nonce}.{expires}"
    return f"{value}.{sign(secret, 'confirm', value)}"


def parse_confirm_token(secret: bytes, token: str) -> tuple[str, int] | None:
    """(nonce, expiry) of a well-formed token whose signature matches, else None."""
    parts = token.split(".")
    if len(parts) != 3 or not is_token(parts[0]):
        return None
    if not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 12):
        return None
    if not verify(secret, "confirm", f"{parts[0]}.{parts[1]}", parts[2]):
        return None
    return parts[0], int(parts[1])
