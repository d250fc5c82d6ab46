"""Address keys: one subscriber per address, whichever way its domain is spelled."""

import json
import sqlite3

import pytest
from email_validator import EmailNotValidError, validate_email
from sqlite_utils import Database

from listkit import addresses
from listkit.addresses import address_and_key, email_key, normalize_address
from listkit.db import migrations, open_db
from listkit.errors import InputError

UNICODE = "anna@bücher.example"
ASCII = "anna@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "spelling", [UNICODE, ASCII, "Anna@BÜCHER.example", " ANNA@XN--BCHER-KVA.EXAMPLE "]
)
def test_both_spellings_of_an_international_domain_have_one_key(spelling):
    assert email_key(spelling) == "anna@xn--bcher-kva.example"


def test_plain_addresses_keep_their_case_folded_key():
    assert email_key(" Ann@Example.COM ") == "ann@example.com"


def test_a_key_is_given_even_for_what_is_not_an_address():
    # Sales and suppressions may hold junk; the key must never raise.
    assert email_key("no at sign") == "no at sign"
    assert email_key("x@-bad-.ü") == "x@-bad-.ü"


def test_an_import_with_both_spellings_makes_one_subscriber(run, tmp_path, ws):
    run("lists", "create", "blog")
    f = tmp_path / "idn.csv"
    f.write_text(f"email,name\n{UNICODE},Anna\n{ASCII},Anna again\n", encoding="utf-8")
    out = json.loads(run("subscribers", "import", str(f), "--list", "blog", "--json").output)
    assert (out["imported"], out["skipped"]["duplicate"]) == (1, 1)
    assert ws.db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 1


def test_a_later_add_in_the_other_spelling_updates_the_same_subscriber(run, ws):
    run("lists", "create", "blog")
    run("subscribers", "add", UNICODE, "--list", "blog")
    out = run("subscribers", "add", ASCII, "--list", "blog").output
    assert out.startswith("Updated ")
    assert ws.db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 1


def test_a_suppression_in_one_spelling_holds_for_the_other(run, tmp_path):
    run("lists", "create", "blog")
    run("suppress", "add", UNICODE, "--reason", "complaint")
    f = tmp_path / "idn.csv"
    f.write_text(f"email\n{ASCII}\n")
    out = json.loads(run("subscribers", "import", str(f), "--list", "blog", "--json").output)
    assert out["skipped"]["not_reactivated"] == 1
    assert run("suppress", "add", ASCII).output.endswith("was already suppressed.\n")


def test_unsubscribe_in_the_other_spelling_unsubscribes_the_subscriber(run):
    run("lists", "create", "blog")
    run("subscribers", "add", ASCII, "--list", "blog")
    out = run("unsubscribe", UNICODE).output
    assert "from blog." in out
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    assert [r["status"] for r in rows] == ["unsubscribed"]


def _old_database(path):
    """A database at the step before re-keying, with keys in the old form."""
    db = Database(sqlite3.connect(str(path)))
    db.execute("PRAGMA foreign_keys = ON")
    migrations.apply(db, stop_before="m008_rekey_international_domains")
    now = "2026-01-01T00:00:00+00:00"
    with db.conn:
        db.execute(
            "INSERT INTO lists (id, slug, created) VALUES (1, 'blog', ?), (2, 'news', ?)",
            [now, now],
        )
        # Two rows for one person: keyed apart before, one key now.
        db.execute(
            "INSERT INTO subscribers (id, email, key, created) VALUES (1, ?, ?, ?), (2, ?, ?, ?),"
            " (3, 'bob@example.com', 'bob@example.com', ?)",
            [ASCII, ASCII, now, UNICODE, UNICODE, now, now],
        )
        db.execute(
            "INSERT INTO memberships (list_id, subscriber_id, status, created) VALUES"
            " (1, 1, 'active', ?), (1, 2, 'unsubscribed', ?), (2, 2, 'active', ?),"
            " (1, 3, 'active', ?)",
            [now] * 4,
        )
        db.execute(
            "INSERT INTO campaigns (id, slug, offer, created)"
            " VALUES (1, 'c1', 'o', ?), (2, 'c2', 'o', ?)",
            [now, now],
        )
        db.execute(
            "INSERT INTO deliveries"
            " (campaign_id, subscriber_id, list_id, email, token, state, created) VALUES"
            " (1, 1, 1, ?, 't1', 'sent', ?), (1, 2, 1, ?, 't2', 'sent', ?),"
            " (2, 2, 1, ?, 't3', 'sent', ?)",
            [ASCII, now, UNICODE, now, UNICODE, now],
        )
        db.execute(
            "INSERT INTO suppressions (key, email, reason, created) VALUES (?, ?, 'complaint', ?),"
            " ('cé@bücher.example', 'cé@bücher.example', 'manual', ?)",
            [UNICODE, UNICODE, now, now],
        )
        db.execute(
            "INSERT INTO sales (source, order_id, amount, currency, at, email, email_key, imported)"
            " VALUES ('x', '1', 100, 'USD', ?, ?, ?, ?)",
            [now, UNICODE, UNICODE, now],
        )
    db.conn.close()


def test_the_migration_rekeys_old_rows_and_merges_two_rows_for_one_address(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path)
    db = open_db(path)
    subs = db.execute("SELECT id, key FROM subscribers ORDER BY id").fetchall()
    # The first row keeps the address; the second is retired, its history kept.
    assert subs[0] == (1, ASCII)
    assert subs[1] == (2, UNICODE + "#merged-into-1")
    assert subs[2] == (3, "bob@example.com")
    # Its memberships went to the first row; unsubscribed wins over active.
    members = db.execute(
        "SELECT list_id, subscriber_id, status FROM memberships ORDER BY list_id, subscriber_id"
    ).fetchall()
    assert members == [(1, 1, "unsubscribed"), (1, 3, "active"), (2, 1, "active")]
    # Deliveries move where the first row has none in that campaign; the one that
    # moved keeps the address it went to, which is not its new subscriber's spelling.
    deliveries = db.execute(
        "SELECT legacy_token, subscriber_id, sent_to FROM deliveries ORDER BY id"
    ).fetchall()
    assert deliveries == [(b"t1", 1, None), (b"t2", 2, None), (b"t3", 1, UNICODE)]
    assert db.execute("SELECT key FROM suppressions ORDER BY key").fetchall() == [
        (ASCII,),
        ("cé@xn--bcher-kva.example",),
    ]
    assert db.execute("SELECT email_key FROM sales").fetchone() == (ASCII,)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


# The plain forms the fast path takes, and the near misses it must leave to
# email-validator; the domain is asked twice, so the second answer comes from
# what the first one remembered.
JUDGED = [
    "ann@example.com",
    " Ann.Lee+news@Mail.Example.ORG ",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "ann@" + "d" * 63 + ".example.com",
    "ann@" + "d" * 64 + ".example.com",
    "ann@" + ".".join(["abcdefghi"] * 25) + ".com",
    "ann..lee@example.com",
    ".ann@example.com",
    "ann.@example.com",
    "ann@example",
    "ann@example.c",
    "ann@-example.com",
    "ann@example-.com",
    "ann@example.test",
    "ann@example.LOCALHOST",
    "ann@example.onion",
    "anna@bücher.example",
    "ännä@example.com",
    "ann@@example.com",
    "@example.com",
    "ann@",
    "ann lee@example.com",
    '"ann lee"@example.com',
    "ann@[192.0.2.1]",
    "ann@example.com\n",
]


@pytest.mark.parametrize("raw", JUDGED * 2)
def test_the_fast_path_judges_an_address_as_email_validator_does(raw):
    try:
        expected = validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    if expected is None:
        with pytest.raises(InputError):
            normalize_address(raw)
        with pytest.raises(InputError):
            address_and_key(raw)
    else:
        assert normalize_address(raw) == expected
        assert address_and_key(raw) == (expected, email_key(expected))


def test_the_remembered_domains_stay_few_whatever_a_file_holds():
    for n in range(addresses._FAST_DOMAINS_MAX * 2):
        assert address_and_key(f"ann@d{n}.Example.com") == (
            f"ann@d{n}.example.com",
            f"ann@d{n}.example.com",
        )
    assert len(addresses._fast_domains) <= addresses._FAST_DOMAINS_MAX


def test_an_overlong_address_leaves_nothing_remembered():
    addresses._fast_domains.clear()
    with pytest.raises(InputError):
        address_and_key("ann@" + "d" * 100_000 + ".example.com")
    assert addresses._fast_domains == {}
