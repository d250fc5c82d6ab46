"""The table of export formats: which header is which producer's, and how its columns map."""

import csv
from pathlib import Path

import pytest

from listkit.audience.imports import detect
from listkit.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


def header(name: str) -> list[str]:
    with (FIXTURES / name).open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f))


def mapping(cols: list[str], wanted: str = "auto") -> dict:
    shape = detect(cols, wanted)
    present = set(cols)

    def here(column):  # a column the file lacks is read as empty: no matter how it is named
        return column if column in present else None

    consent = (shape.consent_at, shape.confirmed_at, shape.consent_ip, shape.confirm_ip)
    return {
        "name": shape.name,
        "email": shape.email,
        "names": tuple(c for c in shape.names if here(c)),
        "consent": tuple(map(here, consent)),
        "status_at": here(shape.status_at),
        "known": sorted(shape.known & present),
        "times": sorted(shape.times & present),
        "has_status": shape.status is not None,
    }


MAILCHIMP_KNOWN = ["CONFIRM_IP", "CONFIRM_TIME", "Email Address", "First Name", "Last Name"]
MAILCHIMP_KNOWN += ["OPTIN_IP", "OPTIN_TIME"]
MAILCHIMP_CONSENT = ("OPTIN_TIME", "CONFIRM_TIME", "OPTIN_IP", "CONFIRM_IP")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "mailchimp_subscribed.csv",
            {
                "name": "mailchimp",
                "email": "Email Address",
                "names": ("First Name", "Last Name"),
                "consent": MAILCHIMP_CONSENT,
                "status_at": None,
                "known": MAILCHIMP_KNOWN,
                "times": ["CONFIRM_TIME", "LAST_CHANGED", "OPTIN_TIME"],
                "has_status": True,
            },
        ),
        (
            "mailchimp_unsubscribed.csv",
            {
                "name": "mailchimp (unsubscribed)",
                "email": "Email Address",
                "names": ("First Name", "Last Name"),
                "consent": MAILCHIMP_CONSENT,
                "status_at": "UNSUB_TIME",
                "known": MAILCHIMP_KNOWN,
                "times": ["CONFIRM_TIME", "OPTIN_TIME", "UNSUB_TIME"],
                "has_status": True,
            },
        ),
        (
            "mailchimp_cleaned.csv",
            {
                "name": "mailchimp (cleaned)",
                "email": "Email Address",
                "names": ("First Name", "Last Name"),
                "consent": MAILCHIMP_CONSENT,
                "status_at": "CLEAN_TIME",
                "known": MAILCHIMP_KNOWN,
                "times": ["CLEAN_TIME", "CONFIRM_TIME", "OPTIN_TIME"],
                "has_status": True,
            },
        ),
        (
            "substack_new.csv",
            {
                "name": "substack",
                "email": "email",
                "names": (),
                "consent": ("created_at", None, None, None),
                "status_at": None,
                "known": ["created_at", "email", "email_disabled"],
                "times": ["created_at", "expiry", "first_payment_at"],
                "has_status": True,
            },
        ),
        (
            "substack_subscribers.csv",
            {
                "name": "substack",
                "email": "email",
                "names": (),
                "consent": (None, None, None, None),
                "status_at": None,
                "known": ["email", "email_disabled"],
                "times": ["expiry"],
                "has_status": True,
            },
        ),
        (
            "ghost.csv",
            {
                "name": "ghost",
                "email": "email",
                "names": ("name",),
                "consent": ("created_at", None, None, None),
                "status_at": "deleted_at",
                "known": ["created_at", "email", "name", "subscribed_to_emails"],
                "times": ["created_at", "deleted_at"],
                "has_status": True,
            },
        ),
        (
            "beehiiv.csv",
            {
                "name": "beehiiv",
                "email": "email",
                "names": ("First Name", "Last Name"),
                "consent": ("created_at", None, None, None),
                "status_at": "unsubscribed_at",
                "known": ["First Name", "Last Name", "created_at", "email", "status"],
                "times": ["Subscription Date (Substack)", "created_at", "unsubscribed_at"],
                "has_status": True,
            },
        ),
        (
            "kit.csv",
            {
                "name": "kit",
                "email": "email_address",
                "names": ("first_name",),
                "consent": ("created_at", None, None, None),
                "status_at": None,
                "known": ["created_at", "email_address", "first_name", "state"],
                "times": ["created_at"],
                "has_status": True,
            },
        ),
    ],
)
def test_each_producers_export_is_recognised_with_its_columns(fixture, expected):
    assert mapping(header(fixture)) == expected


def test_kit_columns_are_matched_in_any_case_and_keep_the_files_spelling():
    got = mapping(["Email", "First_Name", "Last_Name", "Status", "Created_At", "tags"])
    assert got == {
        "name": "kit",
        "email": "Email",
        "names": ("First_Name", "Last_Name"),
        "consent": ("Created_At", None, None, None),
        "status_at": None,
        "known": ["Created_At", "Email", "First_Name", "Last_Name", "Status"],
        "times": ["Created_At"],
        "has_status": True,
    }


def test_an_unknown_header_is_a_plain_csv_with_its_usual_address_column():
    got = mapping(["E-Mail", "Full Name", "plan"])
    assert (got["name"], got["email"], got["names"], got["has_status"]) == (
        "csv",
        "E-Mail",
        ("Full Name",),
        False,
    )


@pytest.mark.parametrize(
    ("wanted", "needs"),
    [
        ("mailchimp", "an 'Email Address' column"),
        ("substack", "'email' and 'active_subscription' columns"),
        ("ghost", "'email' and 'subscribed_to_emails' columns"),
        ("beehiiv", "'email', 'status' and 'First Name' columns"),
        ("kit", "an 'email' or 'email_address' column"),
    ],
)
def test_a_format_asked_for_by_name_names_the_columns_it_lacks(wanted, needs):
    with pytest.raises(InputError) as e:
        detect(["address", "name"], wanted)
    assert str(e.value) == f"this is not a {wanted} export: it needs {needs}"


def test_a_format_asked_for_by_name_is_read_as_that_format_even_when_another_comes_first():
    # Ghost's columns would be read as Kit's by a loose match, and the other way round.
    cols = ["email", "name", "subscribed_to_emails", "status", "created_at"]
    assert mapping(cols)["name"] == "ghost"
    assert mapping(cols, "kit")["name"] == "kit"
