"""Subscriber imports: every real export shape, and every kind of bad input."""

import io
import json
from pathlib import Path

import pytest

from listkit.audience.provenance import (
    CONSENT_METHOD,
    CONSENT_SOURCE,
    SUBSCRIBER_SOURCE,
)

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


@pytest.fixture(params=["in-process", "reader-process"], autouse=True)
def reader(request, monkeypatch):
    """Every test runs twice: the file read in this process, and in a forked reader."""
    import listkit.audience.imports

    calls = []
    real = listkit.audience.imports._from_process

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(listkit.audience.imports, "_from_process", spy)
    if request.param == "reader-process":
        monkeypatch.setattr(listkit.audience.imports, "PROCESS_MIN_BYTES", 0)
    return calls


@pytest.fixture
def blog(run):
    run("lists", "create", "blog")


def do_import(run, path, *args, ok=True):
    return run("subscribers", "import", str(path), "--list", "blog", *args, ok=ok)


def summary(run, path, *args):
    return json.loads(do_import(run, path, "--json", *args).output)


def members(run):
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    return {r["email"]: r["status"] for r in rows}


def suppressed(run):
    return {r["email"]: r["reason"] for r in json.loads(run("suppress", "ls", "--json").output)}


def test_mailchimp_subscribed_keeps_consent_evidence_and_merge_fields(run, blog):
    s = summary(run, FIXTURES / "mailchimp_subscribed.csv")
    assert (s["format"], s["imported"], s["rejected"]) == ("mailchimp", 3, 0)
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert ann["name"] == "Ann Lee"
    assert ann["fields"]["Favourite Topic"] == "pricing"
    assert ann["fields"]["TAGS"] == '"Launch","VIP"'
    m = ann["lists"][0]
    assert (m["consent_at"], m["confirmed_at"], m["consent_ip"]) == (
        "2024-01-02T10:00:00+00:00",
        "2024-01-02T10:05:00+00:00",
        "203.0.113.5",
    )
    zoe = json.loads(run("subscribers", "show", "zoe.muller@example.de", "--json").output)
    assert zoe["name"] == "Zoë Müller"


def test_mailchimp_unsubscribed_and_cleaned_become_suppressions(run, blog):
    s = summary(run, FIXTURES / "mailchimp_unsubscribed.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("mailchimp (unsubscribed)", 0, 1)
    s = summary(run, FIXTURES / "mailchimp_cleaned.csv")
    assert (s["format"], s["suppressed"]) == ("mailchimp (cleaned)", 1)
    assert suppressed(run) == {
        "gone@example.com": "unsubscribed",
        "bounced@example.com": "hard_bounce",
    }
    assert members(run) == {"gone@example.com": "unsubscribed", "bounced@example.com": "bounced"}


def test_substack_email_disabled_is_not_active(run, blog):
    s = summary(run, FIXTURES / "substack_old.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("substack", 1, 1)
    s = summary(run, FIXTURES / "substack_new.csv")
    assert (s["format"], s["imported"]) == ("substack", 1)
    assert members(run) == {
        "reader@example.com": "active",
        "quiet@example.com": "unsubscribed",
        "paid@example.com": "active",
    }
    paid = json.loads(run("subscribers", "show", "paid@example.com", "--json").output)
    assert paid["fields"]["plan"] == "yearly"


def test_ghost_members_not_subscribed_to_emails_are_suppressed(run, blog):
    s = summary(run, FIXTURES / "ghost.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("ghost", 1, 1)
    gina = json.loads(run("subscribers", "show", "gina@example.com", "--json").output)
    assert gina["name"] == "Gina Ghost"
    assert gina["fields"]["labels"] == "vip,early"


def test_kit_states_map_to_suppression_reasons(run, blog):
    s = summary(run, FIXTURES / "kit.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("kit", 1, 3)
    assert suppressed(run) == {
        "cal@example.com": "unsubscribed",
        "bea@example.com": "hard_bounce",
        "cory@example.com": "complaint",
    }
    assert members(run)["kim@example.com"] == "active"


def test_kit_inactive_subscribers_are_pending_members_not_suppressions(run, blog):
    s = summary(run, FIXTURES / "kit.csv")
    assert s["pending"] == 1
    assert members(run)["ivy@example.com"] == "pending"
    assert "ivy@example.com" not in suppressed(run)


def test_beehiiv_only_active_rows_without_an_unsubscribe_date_become_active(run, blog):
    s = summary(run, FIXTURES / "beehiiv.csv")
    assert (s["format"], s["imported"], s["pending"], s["suppressed"]) == ("beehiiv", 2, 3, 3)
    assert members(run) == {
        "bee@example.com": "active",
        "ina@example.com": "unsubscribed",
        "pen@example.com": "pending",
        "val@example.com": "pending",
        "att@example.com": "pending",
        "inv@example.com": "bounced",
        "unsub@example.com": "unsubscribed",
        "fromsubstack@example.com": "active",
    }
    assert suppressed(run) == {
        "ina@example.com": "unsubscribed",
        "inv@example.com": "hard_bounce",
        "unsub@example.com": "unsubscribed",
    }


def test_a_status_listkit_does_not_know_rejects_the_row(run, blog, tmp_path):
    f = tmp_path / "beehiiv_new_status.csv"
    f.write_text(
        "email,First Name,Last Name,status,tier,created_at\n"
        "ok@example.com,,,active,free,2023-03-24 10:23:10 UTC\n"
        "odd@example.com,,,paused,free,2023-03-24 10:23:10 UTC\n"
    )
    s = summary(run, f)
    assert s["errors"] == [
        {
            "line": 3,
            "reason": "status 'paused' is not one listkit knows (active, inactive, pending, "
            "validating, needs_attention, invalid)",
        }
    ]
    assert members(run) == {"ok@example.com": "active"}


def test_pending_members_are_never_in_a_campaign_audience(run, blog, ws, workspace):
    from listkit.send.campaigns import audience_count, iter_audience, load_campaign

    run("lists", "create", "customers")
    summary(run, FIXTURES / "kit.csv")
    summary(run, FIXTURES / "beehiiv.csv")
    launch = load_campaign(workspace / "campaigns", "launch")  # lists blog and customers
    mailed = {sub["email"] for sub, _, _ in iter_audience(ws.db, launch)}
    assert mailed == {"kim@example.com", "bee@example.com", "fromsubstack@example.com"}
    assert audience_count(ws.db, launch) == {"blog": 3, "customers": 0}


def test_a_pending_member_can_unsubscribe(run, blog):
    summary(run, FIXTURES / "kit.csv")
    run("unsubscribe", "ivy@example.com", "--list", "blog")
    assert members(run)["ivy@example.com"] == "unsubscribed"


def test_a_pending_member_added_by_hand_stays_pending(run, blog):
    summary(run, FIXTURES / "kit.csv")
    out = run("subscribers", "add", "ivy@example.com", "--list", "blog").output
    assert out == "ivy@example.com has not confirmed on blog yet: not made active.\n"
    assert members(run)["ivy@example.com"] == "pending"


def test_substack_deletion_request_placeholders_are_skipped(run, blog):
    s = summary(run, FIXTURES / "substack_old.csv")
    assert s["skipped"]["deletion_request"] == 1
    assert not any("deletion-request" in e for e in members(run))
    out = do_import(run, FIXTURES / "substack_old.csv").output
    assert "skipped 1 deletion request" in out


def test_substack_paid_subscribers_file_is_recognised(run, blog):
    s = summary(run, FIXTURES / "substack_subscribers.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("substack", 2, 1)
    assert members(run)["comped@example.com"] == "unsubscribed"
    paying = json.loads(run("subscribers", "show", "paying@example.com", "--json").output)
    assert paying["fields"]["type"] == "paid"
    assert paying["fields"]["expiry"] == "2027-07-06T16:20:44+00:00"


def test_older_ghost_exports_with_products_are_read(run, blog):
    s = summary(run, FIXTURES / "ghost_products.csv")
    assert (s["format"], s["imported"], s["suppressed"]) == ("ghost", 1, 1)
    olga = json.loads(run("subscribers", "show", "old@example.com", "--json").output)
    assert olga["fields"]["products"] == "Gold"
    assert olga["lists"][0]["consent_at"] == "2021-02-01T09:30:00+00:00"


def test_consent_times_are_stored_as_utc_iso_8601_whatever_the_export(run, blog):
    summary(run, FIXTURES / "substack_old.csv")
    summary(run, FIXTURES / "ghost.csv")
    summary(run, FIXTURES / "beehiiv.csv")
    summary(run, FIXTURES / "kit.csv")
    rows = json.loads(run("subscribers", "ls", "--list", "blog", "--json").output)
    at = {r["email"]: r["consent_at"] for r in rows}
    assert at["reader@example.com"] == "2023-05-01T12:00:00.713000+00:00"
    assert at["gina@example.com"] == "2023-07-01T10:00:00+00:00"
    assert at["bee@example.com"] == "2023-03-24T10:23:10+00:00"
    assert at["kim@example.com"] == "2023-08-01T10:00:00+00:00"


def test_unsubscribe_and_bounce_times_come_from_the_export(run, blog):
    summary(run, FIXTURES / "mailchimp_unsubscribed.csv")
    summary(run, FIXTURES / "mailchimp_cleaned.csv")
    summary(run, FIXTURES / "beehiiv.csv")
    at = {}
    for email in ("gone@example.com", "bounced@example.com", "unsub@example.com"):
        shown = json.loads(run("subscribers", "show", email, "--json").output)
        at[email] = shown["lists"][0]["status_at"]
    assert at == {
        "gone@example.com": "2024-03-01T09:00:00+00:00",
        "bounced@example.com": "2024-03-02T09:00:00+00:00",
        "unsub@example.com": "2024-03-13T11:33:53+00:00",
    }


def test_a_consent_time_that_is_not_a_time_rejects_the_row(run, blog, tmp_path):
    f = tmp_path / "ghost_bad_time.csv"
    f.write_text(
        "id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,"
        "created_at,deleted_at,labels,tiers\n"
        "1,a@example.com,A,,true,false,,yesterday,,,\n"
        "2,b@example.com,B,,true,false,,2023-07-01T10:00:00.000Z,,,\n"
    )
    s = summary(run, f)
    assert s["errors"] == [{"line": 2, "reason": "created_at 'yesterday' is not a date and time"}]
    assert members(run) == {"b@example.com": "active"}


def test_custom_field_values_and_names_are_trimmed(run, blog, tmp_path):
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    pad = json.loads(run("subscribers", "show", "pad@example.com", "--json").output)
    assert pad["name"] == "Dolor Simet"
    assert pad["fields"]["Company"] == "Lorem Co."
    f = tmp_path / "padded.csv"
    f.write_text("email, plan , city\nx@example.com,  pro ,\t Paris \n")
    summary(run, f)
    x = json.loads(run("subscribers", "show", "x@example.com", "--json").output)
    assert x["fields"] == {"plan": "pro", "city": "Paris"}
    run(
        "subscribers",
        "add",
        "y@example.com",
        "--list",
        "blog",
        "--name",
        " Y ",
        "--field",
        "plan= gold ",
    )
    y = json.loads(run("subscribers", "show", "y@example.com", "--json").output)
    assert (y["name"], y["fields"]) == ("Y", {"plan": "gold"})


def test_a_later_import_does_not_reactivate_suppressed_or_unsubscribed(run, blog, tmp_path):
    summary(run, FIXTURES / "mailchimp_unsubscribed.csv")
    run("subscribers", "add", "left@example.com", "--list", "blog")
    run("unsubscribe", "left@example.com", "--list", "blog")
    again = tmp_path / "again.csv"
    again.write_text("email,name\ngone@example.com,G\nleft@example.com,L\nnew@example.com,N\n")
    s = summary(run, again)
    assert (s["imported"], s["updated"], s["skipped"]["not_reactivated"]) == (1, 0, 2)
    assert members(run) == {
        "gone@example.com": "unsubscribed",
        "left@example.com": "unsubscribed",
        "new@example.com": "active",
    }
    out = do_import(run, again).output
    assert "skipped 2 not reactivated" in out


def test_imports_keep_every_reference_valid_and_foreign_keys_on(run, blog, ws, tmp_path):
    # The import writes with SQLite's per-row foreign-key checks off: check
    # that every row it wrote still holds, across new, updated and suppressed.
    summary(run, FIXTURES / "mailchimp_unsubscribed.csv")
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    f = tmp_path / "more.csv"
    f.write_text("email,name\ngone@example.com,G\nann@example.com,A\nnew@example.com,N\n")
    summary(run, f)
    run("lists", "create", "other")
    run("subscribers", "import", str(f), "--list", "other")
    assert ws.db.execute("PRAGMA foreign_key_check").fetchall() == []
    other = "SELECT count(*) FROM memberships JOIN lists ON lists.id = list_id WHERE slug = 'other'"
    assert ws.db.execute(other).fetchone()[0] == 3
    assert ws.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reimport_updates_instead_of_duplicating(run, blog, ws):
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    s = summary(run, FIXTURES / "mailchimp_subscribed.csv")
    assert (s["imported"], s["updated"]) == (0, 3)
    assert ws.db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 3


def test_same_address_in_three_letter_cases_is_one_subscriber(run, blog, tmp_path, ws):
    f = tmp_path / "cases.csv"
    f.write_text(
        "email,name\nann@example.com,A1\nANN@EXAMPLE.COM,A2\nAnn@Example.Com,A3\nb@example.com,B\n"
    )
    s = summary(run, f)
    assert (s["imported"], s["skipped"]["duplicate"], s["rejected"]) == (2, 2, 0)
    assert ws.db.execute(
        "SELECT name FROM subscribers WHERE key = 'ann@example.com'"
    ).fetchone() == ("A1",)


def test_duplicates_across_chunks_are_detected(run, blog, tmp_path, monkeypatch):
    import listkit.audience.imports

    monkeypatch.setattr(listkit.audience.imports, "CHUNK", 2)
    f = tmp_path / "dups.csv"
    f.write_text(
        "email\na@example.com\nb@example.com\nc@example.com\nA@example.com\nd@example.com\n"
    )
    s = summary(run, f)
    assert (s["imported"], s["updated"], s["skipped"]["duplicate"]) == (4, 0, 1)


def test_utf8_bom_crlf_and_lone_cr_line_ends(run, blog, tmp_path):
    for name, data in {
        "bom.csv": b"\xef\xbb\xbfemail,name\r\na@example.com,A\r\n",
        "crlf.csv": b"email,name\r\nb@example.com,B\r\nc@example.com,C\r\n",
        "cr.csv": b"email,name\rd@example.com,D\re@example.com,E\r",
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        s = summary(run, path)
        assert s["rejected"] == 0, name
    assert set(members(run)) == {f"{c}@example.com" for c in "abcde"}


def test_invalid_addresses_are_rejected_with_line_and_reason(run, blog, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("email,name\ngood@example.com,G\nnot-an-address,X\n,Empty\nalso@example.com,A\n")
    errors = tmp_path / "errors.csv"
    s = summary(run, f, "--errors", str(errors))
    assert (s["imported"], s["rejected"]) == (2, 2)
    assert [(e["line"], e["reason"]) for e in s["errors"]] == [
        (3, "invalid address in column 'email': An email address must have an @-sign."),
        (4, "no address"),
    ]
    lines = errors.read_text().splitlines()
    assert lines[0] == "line,reason,email,name"
    assert lines[1].startswith("3,invalid address") and lines[1].endswith(",not-an-address,X")
    assert lines[2] == "4,no address,,Empty"


def test_nul_byte_rejects_that_row_only(run, blog, tmp_path):
    f = tmp_path / "nul.csv"
    f.write_bytes(b"email,name\na@example.com,A\nb\x00@example.com,B\nc@example.com,C\n")
    s = summary(run, f)
    assert (s["imported"], s["rejected"]) == (2, 1)
    assert s["errors"] == [{"line": 3, "reason": "contains a NUL byte"}]


def test_unclosed_quote_rejects_its_line_and_keeps_the_rest(run, blog, tmp_path):
    f = tmp_path / "quote.csv"
    f.write_text(
        'email,name\na@example.com,A\nb@example.com,"B\nc@example.com,C\nd@example.com,D\n'
    )
    s = summary(run, f)
    assert s["errors"] == [{"line": 3, "reason": "unclosed quote"}]
    assert set(members(run)) == {"a@example.com", "c@example.com", "d@example.com"}


def test_quoted_field_spanning_lines_keeps_physical_line_numbers(run, blog, tmp_path):
    f = tmp_path / "multi.csv"
    f.write_text('email,note\na@example.com,"line one\nline two"\nbad,x\n')
    s = summary(run, f)
    assert s["errors"][0]["line"] == 4
    shown = json.loads(run("subscribers", "show", "a@example.com", "--json").output)
    assert shown["fields"]["note"] == "line one\nline two"


def test_a_200_kb_field_rejects_that_row_and_keeps_the_others(run, blog, tmp_path):
    f = tmp_path / "big.csv"
    f.write_text("email,bio\na@example.com," + "x" * 200_000 + "\nb@example.com,short\n")
    s = summary(run, f)
    assert s["errors"] == [{"line": 2, "reason": "field 'bio' is 195 KB (limit 64 KB)"}]
    assert set(members(run)) == {"b@example.com"}


def test_latin1_file_gets_a_clear_error_and_imports_nothing(run, blog, tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("email,name\na@example.com,Ann\nb@example.com,Zoë\n".encode("latin-1"))
    result = do_import(run, f, ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {f}, line 3: not UTF-8 text (byte 0xeb). If the file is Latin-1 or "
        "Windows-1252, run again with --encoding latin-1 (or cp1252); nothing was imported\n"
    )
    assert members(run) == {}
    s = summary(run, f, "--encoding", "latin-1")
    assert s["imported"] == 2
    zoe = json.loads(run("subscribers", "show", "b@example.com", "--json").output)
    assert zoe["name"] == "Zoë"


def test_empty_file(run, blog, tmp_path):
    f = tmp_path / "empty.csv"
    f.write_bytes(b"")
    result = do_import(run, f, ok=False)
    assert result.output == f"Error: {f} is empty: expected a header row and subscribers\n"


def test_header_without_an_address_column(run, blog, tmp_path):
    f = tmp_path / "noemail.csv"
    f.write_text("name,city\nAnn,Paris\n")
    result = do_import(run, f, ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: the header has no address column (looked for 'email', 'email address', "
        "'e-mail'); columns found: 'name', 'city'. Name it with --email-column\n"
    )


def test_generic_csv_maps_columns_by_option(run, blog, tmp_path):
    f = tmp_path / "custom.csv"
    f.write_text("Mail,Who,Plan\nx@example.com,Xena,pro\n")
    s = summary(run, f, "--email-column", "Mail", "--name-column", "Who")
    assert (s["format"], s["imported"]) == ("csv", 1)
    x = json.loads(run("subscribers", "show", "x@example.com", "--json").output)
    assert (x["name"], x["fields"]) == ("Xena", {"Plan": "pro"})
    result = do_import(run, f, "--email-column", "Nope", ok=False)
    assert "--email-column 'Nope' is not in the header (columns: 'Mail', 'Who', 'Plan')" in (
        result.output
    )


def test_asking_for_the_wrong_format_says_what_it_needs(run, blog):
    result = do_import(run, FIXTURES / "kit.csv", "--format", "mailchimp", ok=False)
    assert (
        result.output
        == "Error: this is not a mailchimp export: it needs an 'Email Address' column\n"
    )


def test_import_from_stdin(run, blog):
    result = run("subscribers", "import", "-", "--list", "blog", input="email\nstdin@example.com\n")
    assert result.output.startswith("<stdin> (csv) -> blog: 1 imported")


def test_import_into_missing_list(run, tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("email\na@example.com\n")
    result = run("subscribers", "import", str(f), "--list", "nope", ok=False)
    assert result.output == "Error: no list named 'nope': see `listkit lists ls`\n"


def test_human_summary_lists_rejections(run, blog, tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("email\na@example.com\nbad\n")
    out = do_import(run, f).output
    assert f"{f} (csv) -> blog: 1 imported, 0 updated, 0 suppressed, 1 rejected" in out
    assert "line 3: invalid address in column 'email': An email address must have" in out


def test_the_reader_process_is_used_for_large_input_only(run, blog, tmp_path, reader, request):
    f = tmp_path / "few.csv"
    f.write_text("email\na@example.com\n")
    assert summary(run, f)["imported"] == 1
    forked = request.node.callspec.params["reader"] == "reader-process"
    assert len(reader) == (1 if forked else 0)  # a small file: read in this process
    big = tmp_path / "many.csv"
    big.write_text("email\n" + "".join(f"someone.{i}@example.com\n" for i in range(45_000)))
    assert big.stat().st_size > 1 << 20
    assert summary(run, big)["imported"] == 45_000
    assert len(reader) == (2 if forked else 1)  # over 1 MB: always in the reader process


def test_an_error_in_the_reader_process_imports_nothing(run, blog, tmp_path, monkeypatch):
    import listkit.audience.imports

    monkeypatch.setattr(listkit.audience.imports, "CHUNK", 2)
    rows = "".join(f"u{i}@example.com\n" for i in range(10))
    f = tmp_path / "late_error.csv"
    f.write_bytes(b"email\n" + rows.encode() + b"z\xff@example.com\n")
    result = do_import(run, f, ok=False)
    assert "line 12: not UTF-8 text (byte 0xff)" in result.output
    assert members(run) == {}


def test_a_pipe_on_stdin_is_read_in_the_reader_process(run, blog, workspace):
    # A real process and a real pipe: the forked reader must keep the stdin it inherits.
    import subprocess
    import sys

    rows = "".join(f"reader{i}@example.com,R{i}\n" for i in range(3000))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "listkit",
            "--workspace",
            str(workspace),
            "subscribers",
            "import",
            "-",
            "--list",
            "blog",
            "--json",
        ],
        input=("email,name\n" + rows + "broken\n").encode(),
        capture_output=True,
        check=True,
    )
    s = json.loads(done.stdout)
    assert (s["imported"], s["rejected"]) == (3000, 1)
    assert len(members(run)) == 3000


def test_a_reader_process_that_dies_imports_nothing(run, blog, tmp_path, monkeypatch):
    import os

    import listkit.audience.imports

    monkeypatch.setattr(listkit.audience.imports, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(listkit.audience.imports, "_produce_into", lambda *args: os._exit(3))
    f = tmp_path / "some.csv"
    f.write_text("email\na@example.com\nb@example.com\n")
    result = do_import(run, f, ok=False)
    assert "reader process stopped unexpectedly (exit code 3); nothing was imported" in (
        result.output
    )
    assert members(run) == {}


def test_the_summary_says_how_many_wait_for_a_confirmation(run, blog):
    out = do_import(run, FIXTURES / "kit.csv").output
    assert "kit.csv (kit) -> blog: 1 imported, 0 updated, 1 pending (not mailed until they " in out


def test_a_flag_that_is_neither_true_nor_false_rejects_the_row(run, blog, tmp_path):
    f = tmp_path / "substack_odd_flag.csv"
    f.write_text(
        "email,active_subscription,expiry,email_disabled,created_at\n"
        "a@example.com,,,false,2023-05-01T12:00:00.000Z\n"
        "b@example.com,,,maybe,2023-05-01T12:00:00.000Z\n"
    )
    s = summary(run, f)
    assert s["errors"] == [{"line": 3, "reason": "email_disabled 'maybe' is not true or false"}]
    assert members(run) == {"a@example.com": "active"}


def test_a_ghost_member_with_a_deletion_date_is_never_made_active(run, blog, tmp_path):
    f = tmp_path / "ghost_deleted.csv"
    f.write_text(
        "id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,"
        "created_at,deleted_at,labels,tiers\n"
        "1,kept@example.com,K,,true,false,,2023-07-01T10:00:00.000Z,,,Free\n"
        "2,gone@example.com,G,,true,false,,2023-07-01T10:00:00.000Z,"
        "2024-02-01T08:00:00.000Z,,Free\n"
    )
    summary(run, f)
    assert members(run) == {"kept@example.com": "active", "gone@example.com": "unsubscribed"}
    assert suppressed(run) == {"gone@example.com": "unsubscribed"}


def later_kit_export(tmp_path, *rows):
    f = tmp_path / "kit_later.csv"
    f.write_text(
        "id,first_name,email_address,state,created_at,tags\n"
        + "".join(
            f"{100 + i},,{email},{state},2023-08-05T10:00:00Z,\n"
            for i, (email, state) in enumerate(rows)
        )
    )
    return f


def consent(ws, email):
    return ws.db.execute(
        f"""SELECT m.status, {CONSENT_METHOD}, {CONSENT_SOURCE} FROM memberships m
            JOIN subscribers s ON s.id = m.subscriber_id WHERE s.key = ?""",
        [email],
    ).fetchone()


def test_a_member_pending_by_an_import_becomes_active_when_a_later_export_says_active(
    run, blog, ws, tmp_path
):
    summary(run, FIXTURES / "kit.csv")
    assert members(run)["ivy@example.com"] == "pending"
    s = summary(run, later_kit_export(tmp_path, ("ivy@example.com", "active")))
    assert (s["updated"], s["pending"]) == (1, 0)
    assert members(run)["ivy@example.com"] == "active"
    # The later export, which says they confirmed there, is the consent record.
    assert consent(ws, "ivy@example.com") == ("active", "import", "import:kit_later.csv")


def test_a_member_pending_through_our_signup_form_stays_pending_whatever_an_import_says(
    run, blog, ws, tmp_path
):
    from listkit.audience.signups import claim_confirmations, record_signup
    from listkit.db import immediate

    with immediate(ws.db):
        record_signup(ws.db, "blog", "sam@example.com", page="https://blog.example.com/")
        claim_confirmations(ws.db, per_hour=100)  # as the service does: a pending member
    s = summary(run, later_kit_export(tmp_path, ("sam@example.com", "active")))
    assert s["pending"] == 1
    assert consent(ws, "sam@example.com") == ("pending", "form", "https://blog.example.com/")


def test_a_file_without_a_header_row_is_refused_without_quoting_its_first_reader(
    run, blog, tmp_path
):
    f = tmp_path / "noheader.csv"
    f.write_text("ann.buyer@example.com,Ann Buyer\nbob@example.com,Bob\n")
    result = do_import(run, f, ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: the header has no address column and its first line holds an address: "
        "the file needs a header row naming its columns (email, name, ...)\n"
    )


def test_an_invalid_address_is_named_by_its_line_and_column_not_quoted(run, blog, tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("email\na@example.com\nann.buyer@@example.com\n")
    out = do_import(run, f).output
    assert "line 3: invalid address in column 'email': The part after the @-sign" in out
    assert "ann.buyer" not in out


def mailchimp_rows(tmp_path, *rows):
    """A Mailchimp subscribed export (the fixture's own header) holding ``rows``."""
    header = (FIXTURES / "mailchimp_subscribed.csv").read_text().splitlines()[0]
    f = tmp_path / "mailchimp_more.csv"
    f.write_text(header + "\n" + "".join(rows), newline="")
    return f


def test_a_line_break_or_control_character_in_an_imported_name_becomes_a_space(run, blog, tmp_path):
    f = mailchimp_rows(
        tmp_path,
        'uma@example.com,"Uma\nJane",Smith,,,2,2024-01-02 10:00:00,,,,,,,,,,,,,,,\n',
        'ray@example.com,"Ray\r\n","\x1b[31mBanks\x7f",,,2,2024-01-02 10:00:00,,,,,,,,,,,,,,,\n',
    )
    s = summary(run, f)
    assert (s["imported"], s["rejected"]) == (2, 0)
    uma = json.loads(run("subscribers", "show", "uma@example.com", "--json").output)
    assert (uma["name"], uma["first_name"], uma["last_name"]) == (
        "Uma Jane Smith",
        "Uma Jane",
        "Smith",
    )
    ray = json.loads(run("subscribers", "show", "ray@example.com", "--json").output)
    assert (ray["name"], ray["first_name"], ray["last_name"]) == (
        "Ray [31mBanks",
        "Ray",
        "[31mBanks",
    )


def test_custom_fields_keep_their_line_breaks_and_lose_other_control_characters(
    run, blog, tmp_path
):
    f = tmp_path / "notes.csv"
    f.write_bytes(
        b'email,name,"Favourite\nTopic",note\n'
        b'a@example.com,A,"pricing\x1b[0m","first line\r\nsecond\tline\xc2\x85"\n'
    )
    s = summary(run, f)
    assert (s["imported"], s["rejected"]) == (1, 0)
    a = json.loads(run("subscribers", "show", "a@example.com", "--json").output)
    assert a["fields"] == {"Favourite Topic": "pricing [0m", "note": "first line\nsecond line"}


def test_the_source_of_an_import_holds_no_control_character(run, blog, ws, tmp_path):
    f = tmp_path / "odd\nname.csv"
    f.write_text("email\na@example.com\n")
    summary(run, f)
    row = ws.db.execute(f"SELECT {SUBSCRIBER_SOURCE} FROM subscribers s").fetchone()
    member = ws.db.execute(f"SELECT {CONSENT_SOURCE} FROM memberships m").fetchone()
    assert (row[0], member[0]) == ("import:odd name.csv", "import:odd name.csv")


def test_mailchimp_first_and_last_names_are_kept_apart_and_joined_in_name(run, blog):
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert (ann["name"], ann["first_name"], ann["last_name"]) == ("Ann Lee", "Ann", "Lee")
    pad = json.loads(run("subscribers", "show", "pad@example.com", "--json").output)
    assert (pad["name"], pad["first_name"], pad["last_name"]) == ("Dolor Simet", "Dolor", "Simet")


def test_beehiiv_and_kit_first_names_come_from_their_own_columns(run, blog):
    summary(run, FIXTURES / "beehiiv.csv")
    summary(run, FIXTURES / "kit.csv")
    bee = json.loads(run("subscribers", "show", "bee@example.com", "--json").output)
    assert (bee["name"], bee["first_name"], bee["last_name"]) == ("Bee Hive", "Bee", "Hive")
    ina = json.loads(run("subscribers", "show", "ina@example.com", "--json").output)
    assert (ina["first_name"], ina["last_name"]) == ("Ina", None)
    kim = json.loads(run("subscribers", "show", "kim@example.com", "--json").output)
    assert (kim["name"], kim["first_name"], kim["last_name"]) == ("Kim", "Kim", None)


def test_a_single_name_column_is_split_as_ghost_splits_it(run, blog, tmp_path):
    summary(run, FIXTURES / "ghost.csv")
    gina = json.loads(run("subscribers", "show", "gina@example.com", "--json").output)
    assert (gina["name"], gina["first_name"], gina["last_name"]) == ("Gina Ghost", "Gina", "Ghost")
    f = tmp_path / "names.csv"
    f.write_text("email,name\nm@example.com,Mary Ann  van Dyke\nc@example.com,Cher\n")
    summary(run, f)
    m = json.loads(run("subscribers", "show", "m@example.com", "--json").output)
    assert (m["first_name"], m["last_name"]) == ("Mary", "Ann  van Dyke")
    c = json.loads(run("subscribers", "show", "c@example.com", "--json").output)
    assert (c["first_name"], c["last_name"]) == ("Cher", None)


def test_a_later_export_with_a_new_name_replaces_all_of_its_parts(run, blog, tmp_path):
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    f = tmp_path / "renamed.csv"
    f.write_text("email,name\nann@example.com,Annie Lee-Wong\n")
    summary(run, f)
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert (ann["name"], ann["first_name"], ann["last_name"]) == (
        "Annie Lee-Wong",
        "Annie",
        "Lee-Wong",
    )
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("email,plan\nann@example.com,pro\n")
    summary(run, nameless)
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert (ann["name"], ann["first_name"], ann["fields"]["plan"]) == (
        "Annie Lee-Wong",
        "Annie",
        "pro",
    )


def test_every_mailchimp_column_not_stored_elsewhere_becomes_a_custom_field(run, blog):
    summary(run, FIXTURES / "mailchimp_subscribed.csv")
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert ann["fields"] == {
        "Favourite Topic": "pricing",
        "MEMBER_RATING": "2",
        "LAST_CHANGED": "2024-01-02T10:05:00+00:00",
        "LEID": "101",
        "EUID": "a1",
        "TAGS": '"Launch","VIP"',
    }
    zoe = json.loads(run("subscribers", "show", "zoe.muller@example.de", "--json").output)
    assert (zoe["fields"]["CC"], zoe["fields"]["REGION"]) == ("DE", "BE")
    summary(run, FIXTURES / "mailchimp_unsubscribed.csv")
    gone = json.loads(run("subscribers", "show", "gone@example.com", "--json").output)
    assert gone["fields"] == {
        "MEMBER_RATING": "1",
        "UNSUB_TIME": "2024-03-01T09:00:00+00:00",
        "UNSUB_CAMPAIGN_TITLE": "Spring sale",
        "UNSUB_CAMPAIGN_ID": "abc123",
        "UNSUB_REASON": "NORMAL",
        "LEID": "201",
        "EUID": "b1",
    }


def test_every_export_keeps_its_producer_ids_as_custom_fields(run, blog):
    summary(run, FIXTURES / "ghost.csv")
    summary(run, FIXTURES / "kit.csv")
    gina = json.loads(run("subscribers", "show", "gina@example.com", "--json").output)
    assert gina["fields"] == {
        "id": "64a1",
        "complimentary_plan": "false",
        "labels": "vip,early",
        "tiers": "Free",
    }
    kim = json.loads(run("subscribers", "show", "kim@example.com", "--json").output)
    assert kim["fields"] == {"id": "101", "tags": "a,b"}


def test_the_source_of_a_suppression_import_holds_no_control_character(run, tmp_path):
    f = tmp_path / "odd\nbounces.txt"
    f.write_text("gone@example.com\n")
    run("suppress", "import", str(f))
    [row] = json.loads(run("suppress", "ls", "--json").output)
    assert row["source"] == f"import:{tmp_path}/odd bounces.txt"


def test_a_file_with_one_custom_field_keeps_its_value_as_json_and_an_empty_one_as_none(
    run, blog, tmp_path
):
    f = tmp_path / "one_field.csv"
    f.write_text('email,note\na@example.com," say ""hi"" \\ ünï "\nb@example.com,  \n')
    summary(run, f)
    a = json.loads(run("subscribers", "show", "a@example.com", "--json").output)
    b = json.loads(run("subscribers", "show", "b@example.com", "--json").output)
    assert (a["fields"], b["fields"]) == ({"note": 'say "hi" \\ ünï'}, {})


def test_values_repeated_in_a_chunk_are_one_object_each_for_the_writer():
    from listkit import csvin
    from listkit.audience.imports import _Parser, detect

    text = "email,first_name,last_name,plan\n" + "".join(
        f"Ann.{i}@Example.com,Ann,Lee,pro\nbo.{i}@example.com,Bo,Lee,pro\n" for i in range(3)
    )
    records = csvin.records(io.StringIO(text, newline=""), "x.csv")
    _, header = next(records)
    (chunk,) = _Parser(detect(header), header, 100).chunks(records)
    firsts, lasts, plans = ({id(s[i]) for s in chunk.subs} for i in (3, 4, 5))
    assert (len(firsts), len(lasts), len(plans)) == (2, 1, 1)
    # A key spelled as its address is that very object; one that differs is its own.
    assert all((s[1] is s[0]) == (s[0] == s[1]) for s in chunk.subs)
    assert chunk.subs[0][:2] == ("Ann.0@example.com", "ann.0@example.com")


def test_an_import_leaves_the_connections_page_cache_as_it_found_it(blog, ws):
    from listkit.audience.imports import import_subscribers

    db = ws.db
    db.execute("PRAGMA cache_size = -3000")
    stream = io.BytesIO(b"email\na@example.com\n")
    import_subscribers(db, stream, "blog")
    assert db.execute("PRAGMA cache_size").fetchone()[0] == -3000


def test_an_import_stores_its_time_and_source_once_and_every_reader_still_sees_them(
    run, blog, ws, tmp_path
):
    f = tmp_path / "readers.csv"
    f.write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob\ncat@example.com,Cat\n")
    summary(run, f)
    run("lists", "create", "shop")
    g = tmp_path / "buyers.csv"
    g.write_text("email\nann@example.com\ndan@example.com\n")
    run("subscribers", "import", str(g), "--list", "shop")
    imports = ws.db.execute("SELECT id, at, source FROM imports ORDER BY id").fetchall()
    assert [source for _, _, source in imports] == ["import:readers.csv", "import:buyers.csv"]
    (first, first_at, _), (second, second_at, _) = imports
    # What every row of an import would repeat is stored once, in its imports row.
    stored = ws.db.execute(
        "SELECT key, created, source, import_id FROM subscribers ORDER BY id"
    ).fetchall()
    assert stored == [
        ("ann@example.com", None, None, first),
        ("bob@example.com", None, None, first),
        ("cat@example.com", None, None, first),
        ("dan@example.com", None, None, second),
    ]
    assert ws.db.execute(
        """SELECT DISTINCT created, consent_method, consent_source FROM memberships"""
    ).fetchall() == [(None, None, None)]
    # Every reader gives the values as they were stored before: the subscriber's
    # first import, and each membership's own.
    ann = json.loads(run("subscribers", "show", "ann@example.com", "--json").output)
    assert (ann["created"], ann["source"]) == (first_at, "import:readers.csv")
    assert [
        (m["list"], m["joined"], m["consent_method"], m["consent_source"]) for m in ann["lists"]
    ] == [
        ("blog", first_at, "import", "import:readers.csv"),
        ("shop", second_at, "import", "import:buyers.csv"),
    ]
    dan = json.loads(run("subscribers", "show", "dan@example.com", "--json").output)
    assert (dan["created"], dan["source"]) == (second_at, "import:buyers.csv")
    shop = json.loads(run("subscribers", "ls", "--list", "shop", "--json").output)
    assert [(r["email"], r["joined"], r["consent_source"]) for r in shop] == [
        ("ann@example.com", second_at, "import:buyers.csv"),
        ("dan@example.com", second_at, "import:buyers.csv"),
    ]
    picked = json.loads(
        run("subscribers", "ls", "--where", "source=import:buyers.csv", "--json").output
    )
    # ann came from readers.csv, and joined shop through buyers.csv: both count.
    assert [(r["email"], r["source"], r["signed_up"]) for r in picked] == [
        ("ann@example.com", "import:readers.csv", first_at[:10]),
        ("dan@example.com", "import:buyers.csv", second_at[:10]),
    ]
    by_source = json.loads(run("report", "--by", "source", "--json").output)
    assert {r["source"]: r["subscribers"] for r in by_source["rows"]} == {
        "import:readers.csv": 3,
        "import:buyers.csv": 1,
    }


@pytest.mark.parametrize("page", ["https://blog.example.com/", None])
def test_a_reader_an_import_left_pending_who_confirms_on_our_form_has_the_form_as_consent(
    run, blog, ws, page
):
    from listkit.audience.signups import confirm_signup, record_signup
    from listkit.db import immediate

    summary(run, FIXTURES / "kit.csv")
    (at,) = ws.db.execute("SELECT at FROM imports").fetchone()
    with immediate(ws.db):
        record_signup(ws.db, "blog", "ivy@example.com", page=page)
    (nonce,) = ws.db.execute("SELECT nonce FROM signups").fetchone()
    with immediate(ws.db):
        assert confirm_signup(ws.db, nonce, ip="192.0.2.7") == "confirmed"
    ivy = json.loads(run("subscribers", "show", "ivy@example.com", "--json").output)
    (blog,) = ivy["lists"]
    # The consent the form recorded replaces the import's, its source too when the
    # form had none; the membership still began with the import.
    assert (blog["status"], blog["consent_method"], blog["consent_source"]) == (
        "active",
        "double opt-in",
        page,
    )
    assert blog["joined"] == at
    assert (ivy["created"], ivy["source"]) == (at, "import:kit.csv")


def test_the_cycle_collector_paused_for_an_import_runs_again_after_it_even_a_failed_one(
    run, blog, tmp_path
):
    import gc

    f = tmp_path / "ok.csv"
    f.write_text("email\nann@example.com\n")
    assert gc.isenabled()
    summary(run, f)
    assert gc.isenabled()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"email\n\xff\xfe@example.com\n")
    assert do_import(run, bad, ok=False).exit_code == 1
    assert gc.isenabled()
