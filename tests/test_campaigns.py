"""Campaign files: names, fields and their limits, schedule."""

import pytest

from listkit.errors import InputError
from listkit.send.campaigns import load_campaign

BASE = 'offer = "launch"\nlists = ["blog"]\n'


def load(tmp_path, extra: str):
    (tmp_path / "c.toml").write_text(BASE + extra)
    return load_campaign(tmp_path, "c")


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("rate = nan\n", "field rate nan is not a number of messages per second"),
        ("rate = inf\n", "field rate inf is not a number of messages per second"),
        ("rate = 1e400\n", "field rate inf is not a number of messages per second"),
        ("rate = 1e9\n", "field rate 1000000000.0 is too high: at most 10000 messages a second"),
        ("rate = -1\n", "field rate must be 0 (unlimited) or more messages per second"),
        ("holdout = nan\n", "field holdout nan must be a fraction from 0 to below 1"),
        ("holdout = -inf\n", "field holdout -inf must be a fraction from 0 to below 1"),
        ("concurrency = 9223372036854775807\n", "field concurrency must be between 1 and 100"),
        ("attribution_days = 9999999999\n", "field attribution_days must be from 0 to 365"),
        ("attribution_days = -1\n", "field attribution_days must be from 0 to 365"),
        ('max_late = "99999999999999d"\n', "field max_late '99999999999999d' is too long"),
        ('max_late = "' + "9" * 400 + 's"\n', "is too long: at most 366d"),
        ('send_at = "9999-12-31T23:59:59-05:00"\n', "field send_at 9999-12-31T23:59:59-05:00 "),
        ("send_at = 0001-01-01T00:00:00+01:00\n", "field send_at 0001-01-01 00:00:00+01:00 "),
        ('offer = "../x"\n', "field offer: offer name '../x' is not valid"),
        ("exclude_lists = [1]\n", "field exclude_lists must be a list of list names"),
        ('exclude_lists = ["../b"]\n', "field exclude_lists: list name '../b' is not valid"),
    ],
)
def test_non_finite_and_absurd_values_are_refused_with_file_and_field(tmp_path, extra, error):
    if extra.startswith("offer"):
        (tmp_path / "c.toml").write_text(extra + 'lists = ["blog"]\n')
        call = lambda: load_campaign(tmp_path, "c")  # noqa: E731
    else:
        call = lambda: load(tmp_path, extra)  # noqa: E731
    with pytest.raises(InputError) as e:
        call()
    assert str(e.value).startswith(f"{tmp_path / 'c.toml'}: ")
    assert error in str(e.value)


def test_a_send_at_outside_2000_to_2100_is_refused(tmp_path):
    with pytest.raises(InputError) as e:
        load(tmp_path, 'send_at = "2200-01-01T00:00:00+00:00"\n')
    assert str(e.value) == (
        f"{tmp_path / 'c.toml'}: field send_at 2200-01-01T00:00:00+00:00 is not between "
        "2000 and 2100"
    )


def test_sensible_values_load(tmp_path):
    c = load(
        tmp_path,
        'rate = 10000\nholdout = 0.5\nattribution_days = 365\nmax_late = "366d"\n'
        'send_at = "2099-12-31T23:00:00+00:00"\n',
    )
    assert (c.rate, c.holdout, c.attribution_days, c.max_late.days) == (10000, 0.5, 365, 366)


def test_a_campaign_file_that_cannot_be_read_is_an_input_error(tmp_path):
    (tmp_path / "c.toml").write_bytes(BASE.encode() + b"\xff\n")
    with pytest.raises(InputError) as e:
        load_campaign(tmp_path, "c")
    assert str(e.value) == (
        f"{tmp_path / 'c.toml'}: not UTF-8 (line 3, byte 0xff): save the file as UTF-8"
    )


def test_the_lineage_of_a_follow_up_goes_back_to_the_first_campaign_and_stops_at_a_loop(tmp_path):
    from listkit.send.campaigns import lineage

    for slug, follows in (("open", None), ("reminder", "open"), ("last", "reminder")):
        text = 'offer = "launch"\nlists = ["blog"]\n'
        if follows:
            text += f'follows = "{follows}"\nafter = "1d"\n'
        (tmp_path / f"{slug}.toml").write_text(text)
    assert lineage(load_campaign(tmp_path, "last")) == ("last", "reminder", "open")
    assert lineage(load_campaign(tmp_path, "open")) == ("open",)
    # open made to follow last: a loop, walked once.
    (tmp_path / "open.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nfollows = "last"\nafter = "1d"\n'
    )
    assert lineage(load_campaign(tmp_path, "last")) == ("last", "reminder", "open")
