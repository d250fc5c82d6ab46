"""Tracked links, delivery tokens, per-recipient coupons and signed unsubscribe URLs.

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
from listkit.signing import sign, verify

STRIPE_LINK_HOSTS = ("buy.stripe.com",)
TOKEN_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def new_token() -> str:
    """A random delivery token: 16 characters of lower-case base32 (80 bits)."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def is_token(value: str) -> bool:
    return len(value) == 16 and set(value) <= TOKEN_ALPHABET


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
