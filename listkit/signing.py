"""Signing and checking every token and webhook: HMACs, constant-time comparison, replay window.

listkit's own links and tokens (unsubscribe, click, signup confirmation) are
signed here, and every producer's webhook scheme that is a shared secret is
checked here: Stripe's ``t=,v1=`` header (also listkit's own ``/hooks/sale``),
Lemon Squeezy's hex HMAC of the body, Mailgun's HMAC of timestamp and token,
a secret in a URL (Gumroad) and Basic credentials (Postmark).

The rule: a secret or a signature is compared only by ``same``, in constant
time, and a value that cannot be a signature (any text, any type, non-ASCII
included) is a mismatch, never an exception. A signed timestamp is accepted
within ``REPLAY_WINDOW`` seconds of now, one window for every producer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import time

from listkit.errors import ListkitError

# Seconds a signed timestamp stays acceptable (Stripe's default tolerance,
# Mailgun's advice), either side of now: for every producer alike.
REPLAY_WINDOW = 300

_STAMP = re.compile(r"[0-9]{1,12}")


class SignatureRefused(ListkitError):
    """A signature that does not check out; the message says why, never the secret."""


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def same(expected: str | bytes, given: object) -> bool:
    """Whether ``given`` is ``expected``, compared in constant time; False for anything
    that is not text or bytes (a JSON number, None) rather than an error."""
    if not isinstance(given, str | bytes):
        return False
    return hmac.compare_digest(_bytes(expected), _bytes(given))


def hmac_hex(secret: str | bytes, message: bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` (the webhook producers' scheme)."""
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: bytes, purpose: str, value: str) -> str:
    """listkit's signature of ``value`` for one ``purpose`` (``unsubscribe``, ``click``,
    ``confirm``): 16 bytes of HMAC-SHA256, URL-safe base64 without padding."""
    digest = _hmac_sha256(secret, f"{purpose}:{value}".encode())
    return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def verify(secret: bytes, purpose: str, value: str, signature: object) -> bool:
    """Whether ``signature`` is ``sign(secret, purpose, value)``."""
    return same(sign(secret, purpose, value), signature)


def tag(secret: bytes, purpose: str, value: str, size: int) -> bytes:
    """The first ``size`` bytes of listkit's HMAC-SHA256 of ``value`` for ``purpose``
    (a check short enough to travel inside a token)."""
    return _hmac_sha256(secret, f"{purpose}:{value}".encode())[:size]


# HMAC-SHA256 with the secret's key schedule computed once per secret and copied
# for each message: a send derives a token (five HMACs) for every message, and
# ``hmac.new`` pads and hashes the key again each time (about 1.5 us against 1).
@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def _hmac_sha256(secret: bytes, message: bytes) -> bytes:
    """``hmac.new(secret, message, hashlib.sha256).digest()``, the same bytes."""
    h = _keyed(secret).copy()
    h.update(message)
    return h.digest()


# A keyed permutation of the numbers below 2**40: a Feistel network of four rounds
# of HMAC-SHA256 over two 20-bit halves (Luby-Rackoff). It hides a number (a
# delivery id) without a table: ``reveal`` undoes ``conceal`` with the same secret.
_HALF = 20
_HALF_MASK = (1 << _HALF) - 1
CONCEALED_BITS = 2 * _HALF


def _round(secret: bytes, purpose: str, i: int, half: int) -> int:
    return int.from_bytes(tag(secret, f"{purpose}/{i}", str(half), 3), "big") & _HALF_MASK


def conceal(secret: bytes, purpose: str, number: int) -> int:
    """``number`` (0 <= number < 2**40) under a permutation only ``secret`` knows."""
    if not 0 <= number < 1 << CONCEALED_BITS:
        raise ValueError(f"{number} does not fit in {CONCEALED_BITS} bits")
    left, right = number >> _HALF, number & _HALF_MASK
    for i in range(4):
        left, right = right, left ^ _round(secret, purpose, i, right)
    return left << _HALF | right


def reveal(secret: bytes, purpose: str, concealed: int) -> int:
    """The number ``conceal(secret, purpose, number)`` was made from."""
    left, right = concealed >> _HALF, concealed & _HALF_MASK
    for i in reversed(range(4)):
        left, right = right ^ _round(secret, purpose, i, left), left
    return left << _HALF | right


def fresh(stamp: str, now: float | None = None) -> bool:
    """Whether a signed Unix time (ASCII digits) is within ``REPLAY_WINDOW`` of now."""
    return abs((time.time() if now is None else now) - int(stamp)) <= REPLAY_WINDOW


def verify_timestamped(
    header: str | None, body: bytes, secrets: list[str], now: float | None = None
) -> None:
    """Check a ``t=<unix>,v1=<hex>[,v1=<hex>...]`` header (Stripe's scheme, also
    listkit's own): hex HMAC-SHA256 of ``"<t>.<body>"`` with any of ``secrets``,
    ``t`` within ``REPLAY_WINDOW`` of now. Raises SignatureRefused."""
    if not header:
        raise SignatureRefused("Missing signature header.")
    stamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            stamp = value
        elif key == "v1":
            signatures.append(value.strip().lower())
    if stamp is None or not _STAMP.fullmatch(stamp) or not signatures:
        raise SignatureRefused("Malformed signature header.")
    message = stamp.encode() + b"." + body
    expected = [hmac_hex(s, message) for s in secrets]
    # Compare every pair, in constant time, without stopping at the first match.
    matched = False
    for sig in signatures:
        for exp in expected:
            matched |= same(exp, sig)
    if not matched:
        raise SignatureRefused("Bad signature.")
    if not fresh(stamp, now):
        raise SignatureRefused("Signature timestamp outside the tolerance (replayed or clock).")


def basic_auth_matches(header: str | None, expected: str) -> bool:
    """Constant-time check of an ``Authorization: Basic`` header against ``user:pass``."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (ValueError, binascii.Error):
        return False
    return same(expected, given)
