"""One module signs and checks every token and webhook, with one replay window."""

import base64
import hashlib
import hmac

import pytest

from listkit import signing
from listkit.inbox.relays import WebhookRefused, verify_mailgun
from listkit.mail import tracking

SECRET = b"s" * 32


@pytest.mark.parametrize("given", ["ü" * 22, "\udcff", b"\xff", None, 42, ["x"], ""])
def test_a_given_value_of_any_text_or_type_is_a_mismatch_never_an_error(given):
    assert signing.same("abc", given) is False


def test_equal_text_and_bytes_match():
    assert (
        signing.same("abc", "abc")
        and signing.same(b"abc", "abc")
        and signing.same("é", b"\xc3\xa9")
    )


def test_links_and_confirmation_tokens_are_signed_by_the_one_signer():
    token = "abcdefghijklmnop"
    url = tracking.unsubscribe_url("https://x.example", SECRET, token)
    assert url.endswith("/" + signing.sign(SECRET, "unsubscribe", token))
    assert tracking.verify_unsubscribe(SECRET, token, signing.sign(SECRET, "unsubscribe", token))
    # a signature for one purpose is no signature for another
    assert not tracking.verify_unsubscribe(SECRET, token, signing.sign(SECRET, "click", token))
    assert not tracking.verify_click(SECRET, token, "aaaaaaaaaaaa", "é" * 22)
    assert tracking.parse_confirm_token(SECRET, f"{token}.99.{'é' * 22}") is None


def _stripe_header(stamp: int, body: bytes, secret: str = "whsec") -> str:
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def _mailgun(stamp: int, key: str = "key") -> dict:
    digest = hmac.new(key.encode(), f"{stamp}tok".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": str(stamp), "token": "tok", "signature": digest}


@pytest.mark.parametrize("age", [-signing.REPLAY_WINDOW, 0, signing.REPLAY_WINDOW])
def test_stripe_and_mailgun_accept_a_timestamp_within_the_one_replay_window(age):
    now = 1_800_000_000
    signing.verify_timestamped(_stripe_header(now - age, b"{}"), b"{}", ["whsec"], now=now)
    assert verify_mailgun(_mailgun(now - age), "key", now=now) == "tok"


@pytest.mark.parametrize("age", [-signing.REPLAY_WINDOW - 1, signing.REPLAY_WINDOW + 1])
def test_stripe_and_mailgun_refuse_a_timestamp_outside_the_one_replay_window(age):
    now = 1_800_000_000
    with pytest.raises(signing.SignatureRefused, match="outside the tolerance"):
        signing.verify_timestamped(_stripe_header(now - age, b"{}"), b"{}", ["whsec"], now=now)
    with pytest.raises(WebhookRefused, match="replay window"):
        verify_mailgun(_mailgun(now - age), "key", now=now)


@pytest.mark.parametrize(
    "signature",
    [
        {"timestamp": "1800000000", "token": "tok", "signature": "é" * 64},
        {"timestamp": "1800000000", "token": "tök", "signature": "a" * 64},
        {"timestamp": "１８００", "token": "tok", "signature": "a" * 64},
    ],
)
def test_a_non_ascii_mailgun_signature_is_refused_as_malformed_not_a_crash(signature):
    with pytest.raises(WebhookRefused, match="malformed"):
        verify_mailgun(signature, "key", now=1_800_000_000)


def test_basic_credentials_are_checked_in_constant_time_and_refuse_anything_else():
    good = "Basic " + base64.b64encode("user:pässword".encode()).decode()
    assert signing.basic_auth_matches(good, "user:pässword")
    assert not signing.basic_auth_matches(good, "user:password")
    assert not signing.basic_auth_matches("Basic ###", "user:pässword")
    assert not signing.basic_auth_matches("Bearer x", "user:pässword")
    assert not signing.basic_auth_matches(None, "user:pässword")


def test_conceal_is_a_permutation_of_40_bit_numbers_that_reveal_undoes():
    key = b"a-secret-of-16+chars"
    numbers = [0, 1, 2, 3, 1_000_000, 5_000_000, 2**40 - 1]
    hidden = [signing.conceal(key, "delivery", n) for n in numbers]
    assert len(set(hidden)) == len(numbers)
    assert all(0 <= h < 2**40 for h in hidden)
    assert [signing.reveal(key, "delivery", h) for h in hidden] == numbers
    # Neighbours do not stay neighbours, and another key or purpose hides differently.
    assert abs(hidden[2] - hidden[1]) > 1
    assert signing.conceal(b"another-secret-16+", "delivery", 1) != hidden[1]
    assert signing.conceal(key, "other", 1) != hidden[1]
    with pytest.raises(ValueError):
        signing.conceal(key, "delivery", 2**40)


@pytest.mark.parametrize("size", [0, 1, 32, 64, 65, 200])
def test_a_tag_is_the_standard_hmac_sha256_for_a_secret_of_any_length(size):
    secret = bytes(range(256))[:size] or b""
    for value in ("", "12345", "é" * 100):
        expected = hmac.new(secret, f"delivery:{value}".encode(), hashlib.sha256).digest()
        assert signing.tag(secret, "delivery", value, 32) == expected
        assert signing.tag(secret, "delivery", value, 5) == expected[:5]
