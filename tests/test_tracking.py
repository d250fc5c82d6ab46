from urllib.parse import parse_qs, urlsplit

from listkit.mail.tracking import (
    is_token,
    new_token,
    parse_unsubscribe_url,
    personal_coupon,
    track,
    unsubscribe_url,
    verify_unsubscribe,
)


def test_tokens_are_random_base32():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(is_token(t) for t in tokens)


def test_track_adds_utm_and_token_and_keeps_existing_query_and_fragment():
    url = track(
        "https://shop.example.com/l/guide?ref=x&utm_source=old#buy",
        campaign="launch",
        list_slug="blog",
        token="abcdefghijklmnop",
    )
    parts = urlsplit(url)
    assert parts.fragment == "buy"
    assert parse_qs(parts.query) == {
        "ref": ["x"],
        "utm_source": ["listkit"],
        "utm_medium": ["email"],
        "utm_campaign": ["launch"],
        "utm_content": ["blog"],
        "lk": ["abcdefghijklmnop"],
    }
    assert "client_reference_id" not in url


def test_track_uses_the_configured_token_parameter_and_stripe_reference():
    url = track(
        "https://buy.stripe.com/test_123",
        campaign="c",
        list_slug="l",
        token="abcdefghijklmnop",
        token_param="ref",
    )
    query = parse_qs(urlsplit(url).query)
    assert query["ref"] == ["abcdefghijklmnop"]
    assert query["client_reference_id"] == ["abcdefghijklmnop"]


def test_personal_coupon_is_derived_from_the_token():
    assert personal_coupon("LAUNCH30", "abcdefghijklmnop") == "LAUNCH30-ABCDEFGH"


def test_unsubscribe_urls_are_signed_and_tampering_fails():
    secret = b"s" * 32
    url = unsubscribe_url("https://example.com/lk/", secret, "abcdefghijklmnop")
    assert url.startswith("https://example.com/lk/u/abcdefghijklmnop/")
    token, sig = parse_unsubscribe_url(url)
    assert verify_unsubscribe(secret, token, sig)
    assert not verify_unsubscribe(secret, "abcdefghijklmnoq", sig)
    assert not verify_unsubscribe(b"t" * 32, token, sig)
    assert not verify_unsubscribe(secret, token, sig[:-1] + ("A" if sig[-1] != "A" else "B"))


def test_a_delivery_token_names_its_delivery_only_under_the_secret_that_made_it():
    from listkit.mail.tracking import coupon_delivery, delivery_of, delivery_token, is_token

    key = b"a-secret-of-16+chars"
    tokens = {did: delivery_token(key, did) for did in (1, 2, 3, 999_999, 2**40 - 1)}
    assert all(is_token(t) for t in tokens.values())
    assert len(set(tokens.values())) == len(tokens)
    assert {did: delivery_of(key, t) for did, t in tokens.items()} == {d: d for d in tokens}
    # Upper case, as a relay may give it back, names the same delivery.
    assert delivery_of(key, tokens[2].upper()) == 2
    # A personal coupon's 8 characters stand for the id.
    assert {did: coupon_delivery(key, t[:8]) for did, t in tokens.items()} == {d: d for d in tokens}
    assert delivery_of(b"another-secret-16+", tokens[1]) is None
    # The signed check is the last 8 characters: another id's check names nothing.
    assert delivery_of(key, tokens[1][:8] + tokens[2][8:]) is None
