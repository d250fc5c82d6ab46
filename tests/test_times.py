"""One parser of outside times: every importer and webhook reads a time the same way."""

import json

import pytest

from listkit.errors import InputError
from listkit.times import parse_time


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("2024-01-02 10:00:00", "2024-01-02T10:00:00+00:00"),
        ("2023-03-24 10:23:10 UTC", "2023-03-24T10:23:10+00:00"),
        ("2023-05-01T12:00:00.713Z", "2023-05-01T12:00:00.713000+00:00"),
        ("2024-03-14 09:12:31 -0400", "2024-03-14T13:12:31+00:00"),
        ("2024-01-02 10:00+01", "2024-01-02T09:00:00+00:00"),
    ],
)
def test_export_times_are_read_as_utc(written, stored):
    assert parse_time(written, "created_at") == stored


@pytest.mark.parametrize(
    "value", ["yesterday", "2024-13-02 10:00:00", "1" * 12, "x" * 65, True, 1.5]
)
def test_what_is_no_time_is_an_error_naming_the_field(value):
    with pytest.raises(InputError, match=r"^created_at .* is not a date and time$"):
        parse_time(value, "created_at")


def test_an_address_in_a_time_field_is_not_quoted():
    with pytest.raises(InputError) as e:
        parse_time("ann@example.com", "created_at")
    assert "ann" not in str(e.value)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("1710407551", "2024-03-14T09:12:31+00:00"),  # Unix seconds, as Stripe writes them
        ("03/14/2024 09:12:31", "2024-03-14T09:12:31+00:00"),  # a US shop's export
    ],
)
def test_a_subscriber_import_reads_the_times_a_sales_import_reads(run, tmp_path, written, stored):
    run("lists", "create", "blog")
    f = tmp_path / "people.csv"
    f.write_text(f"email,first_name,state,created_at\nann@example.com,Ann,active,{written}\n")
    out = json.loads(run("subscribers", "import", str(f), "--list", "blog", "--json").output)
    assert (out["format"], out["imported"], out["rejected"]) == ("kit", 1, 0)
    shown = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert shown["lists"][0]["consent_at"] == stored
