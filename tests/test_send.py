"""Sending against a real SMTP server with per-recipient faults."""

import json

import pytest

from listkit.send.outbox import counts
from listkit.send.sender import send_campaign
from listkit.workspace import Workspace
from tests import smtp_server

# Every test taking `server` runs against a server with and without PIPELINING.
SMTP_MODES = ("pipelined", "one-by-one")


def setup_campaign(run, workspace, port, addresses, *, extra="", lists=("blog",), timeout=2):
    for slug in lists:
        run("lists", "create", slug)
    for address in addresses:
        run("subscribers", "add", address, "--list", lists[0])
    (workspace / "campaigns" / "t.toml").write_text(
        f'offer = "launch"\nlists = {json.dumps(list(lists))}\nconcurrency = 2\n{extra}'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}?timeout={timeout}")
    )


def claimed(ws, run_id, limit):
    """Campaign t prepared, registered and its outbox built, and up to ``limit`` rows
    claimed by run ``run_id``, as a send does before its first message: (the
    prepared campaign, its id, the rows)."""
    from listkit.send.campaigns import register
    from listkit.send.outbox import build_outbox, claim
    from listkit.send.prepare import prepare

    p = prepare(ws, "t")
    cid = register(ws.db, p.campaign, digest="x", coupon=None)
    build_outbox(ws.db, cid, p.campaign)
    return p, cid, claim(ws.db, cid, run_id, limit, secret=ws.settings.secret_key())


def totals(workspace):
    ws = Workspace(workspace)
    try:
        row = ws.db.execute("SELECT id FROM campaigns WHERE slug = 't'").fetchone()
        return counts(ws.db, row[0])
    finally:
        ws.close()


def rows(workspace):
    ws = Workspace(workspace)
    try:
        return {
            r[0]: r[1:]
            for r in ws.db.execute(
                "SELECT s.email, d.state, d.last_code, d.attempts FROM deliveries d"
                " JOIN subscribers s ON s.id = d.subscriber_id ORDER BY s.email"
            )
        }
    finally:
        ws.close()


ADDRS = [f"r{i}@example.com" for i in range(6)]


def test_all_accepted_is_sent_once_each_and_exits_zero(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    result = run("send", "t", "--yes")
    assert result.output.startswith("t: this run 6 sent")
    assert handler.recipients() == {a: 1 for a in ADDRS}
    assert set(handler.count_by_message_id().values()) == {1}
    assert totals(workspace)["sent"] == 6
    # A second run sends nothing more.
    run("send", "t", "--yes")
    assert len(handler.messages) == 6


def test_450_and_452_are_deferred_then_sent_on_a_later_run(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    handler.fault("r1@example.com", "450")
    handler.fault("r2@example.com", "452")
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    r = rows(workspace)
    assert r["r1@example.com"][:2] == ("deferred", 450)
    assert r["r2@example.com"][:2] == ("deferred", 452)
    assert totals(workspace)["sent"] == 4
    # Not due yet: a run now leaves them alone.
    run("send", "t", "--yes", ok=False)
    assert handler.rcpt_attempts["r1@example.com"] == 1
    run("retry", "t", "--deferred")
    result = run("send", "t", "--yes")
    assert totals(workspace)["sent"] == 6
    assert handler.recipients() == {a: 1 for a in ADDRS}


def test_550_fails_and_suppresses_while_others_are_sent(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    handler.fault("r3@example.com", "550")
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert rows(workspace)["r3@example.com"][:2] == ("failed", 550)
    assert totals(workspace)["sent"] == 5
    supp = json.loads(run("suppress", "ls", "--json").output)
    assert [(s["email"], s["reason"], s["campaign"]) for s in supp] == [
        ("r3@example.com", "hard_bounce", "t")
    ]
    status = run("status", "t").output
    assert "r3@example.com" in status and "550" in status and "No such user" in status
    # retry --failed keeps a suppressed address failed.
    assert run("retry", "t", "--failed").output.startswith("0 failed messages")


def test_421_and_disconnect_before_data_are_deferred(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    handler.fault("r1@example.com", "421")
    handler.fault("r4@example.com", "disconnect_rcpt")
    run("send", "t", "--yes", ok=False)
    r = rows(workspace)
    assert r["r1@example.com"][0] == "deferred"
    assert r["r4@example.com"][0] == "deferred"
    assert "r1@example.com" not in handler.recipients()
    assert totals(workspace)["sent"] == 4
    run("retry", "t", "--deferred")
    run("send", "t", "--yes")
    assert handler.recipients() == {a: 1 for a in ADDRS}


@pytest.mark.parametrize("fault", ["disconnect_after_data", "timeout_after_data"])
def test_lost_after_the_final_dot_is_unknown_and_not_resent(run, workspace, server, fault):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS, timeout=1)
    handler.fault("r2@example.com", fault)
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert "1 unknown: the connection died after DATA began" in result.output
    assert rows(workspace)["r2@example.com"][0] == "unknown"
    assert handler.recipients()["r2@example.com"] == 1  # the server has it
    run("send", "t", "--yes", ok=False)
    run("retry", "t", "--deferred")
    run("send", "t", "--yes", ok=False)
    assert handler.recipients() == {a: 1 for a in ADDRS}
    status = json.loads(run("status", "t", "--json").output)
    assert status["counts"]["unknown"] == 1
    assert status["problems"][0]["email"] == "r2@example.com"
    assert status["problems"][0]["message_id"].endswith(".lk@example.com>")


def test_data_refusal_is_failed_not_unknown(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2])
    handler.fault("r0@example.com", "data_554")
    run("send", "t", "--yes", ok=False)
    assert rows(workspace)["r0@example.com"][:2] == ("failed", 554)
    assert json.loads(run("suppress", "ls", "--json").output) == []  # not a bounce


def test_connection_refused_marks_nothing_and_exits_non_zero(
    run, workspace, free_port, backoff_pauses
):
    setup_campaign(run, workspace, free_port, ADDRS)  # nothing listens there
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert "stopped: cannot connect to smtp://127.0.0.1:" in result.output
    assert "every message is resumable" in result.output
    # Five attempts, with growing pauses between them (recorded, not waited).
    assert backoff_pauses == [0.4, 0.8, 1.6, 3.2]
    t = totals(workspace)
    assert (t["sent"], t["failed"], t["unknown"], t["sending"]) == (0, 0, 0, 0)
    assert t["pending"] == 6


AT_CLAIM = "suppressed or unsubscribed before sending"
BEFORE_CONTENT = "unsubscribed or suppressed while the campaign was sending"


@pytest.mark.parametrize(
    ("batch", "replies"),
    [
        # Claimed one at a time (a few ahead): a later claim or the check
        # before its content skips it.
        (1, {AT_CLAIM, BEFORE_CONTENT}),
        # Every row claimed before the first result: the check before its content skips it.
        (200, {BEFORE_CONTENT}),
    ],
)
def test_unsubscribed_during_the_campaign_gets_nothing_after(
    run, workspace, server, batch, replies
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    ws = Workspace(workspace)
    done = []

    def on_result(result):
        done.append(result)
        if len(done) == 1:
            from listkit.audience.subscribers import unsubscribe

            # Another connection, as a separate `listkit unsubscribe` would.
            other = Workspace(workspace)
            unsubscribe(other.db, "r5@example.com")
            other.close()

    try:
        summary = send_campaign(ws, "t", on_result=on_result, batch=batch)
        skipped = ws.db.execute(
            "SELECT d.state, d.last_reply FROM deliveries d"
            " JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE s.email = 'r5@example.com'"
        ).fetchone()
    finally:
        ws.close()
    assert "r5@example.com" not in handler.recipients()
    assert skipped[0] == "skipped" and skipped[1] in replies
    assert summary.totals["skipped"] == 1 and summary.totals["sent"] == 5
    assert summary.ok


def test_a_subscriber_on_two_lists_gets_one_message_through_the_first(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:3], lists=("blog", "shop"))
    run("subscribers", "add", "r0@example.com", "--list", "shop")
    run("subscribers", "add", "only-shop@example.com", "--list", "shop")
    run("send", "t", "--yes")
    assert handler.recipients()["r0@example.com"] == 1
    ws = Workspace(workspace)
    via = dict(
        ws.db.execute(
            "SELECT s.email, l.slug FROM deliveries d JOIN lists l ON l.id = d.list_id"
            " JOIN subscribers s ON s.id = d.subscriber_id"
        ).fetchall()
    )
    ws.close()
    assert via == {
        "r0@example.com": "blog",
        "r1@example.com": "blog",
        "r2@example.com": "blog",
        "only-shop@example.com": "shop",
    }


def test_excluded_lists_and_suppressions_never_mail(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:4], extra='exclude_lists = ["buyers"]\n')
    run("lists", "create", "buyers")
    run("subscribers", "add", "r1@example.com", "--list", "buyers")
    run("suppress", "add", "r2@example.com")
    run("send", "t", "--yes")
    assert set(handler.recipients()) == {"r0@example.com", "r3@example.com"}


def test_holdout_is_reproducible_and_never_mailed(run, workspace, server):
    controller, handler = server
    many = [f"h{i}@example.com" for i in range(60)]
    setup_campaign(run, workspace, controller.port, many, extra="holdout = 0.25\n")
    run("send", "t", "--yes")
    t = totals(workspace)
    assert t["held_out"] + t["sent"] == 60
    assert 5 <= t["held_out"] <= 25
    held = {e for e, (state, *_rest) in rows(workspace).items() if state == "held_out"}
    assert not held & set(handler.recipients())
    from listkit.send.campaigns import held_out

    assert held == {a for a in many if held_out("t", a, 0.25)}


def test_limit_sends_at_most_n(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    run("send", "t", "--yes", "--limit", "2", ok=False)
    assert len(handler.messages) == 2
    assert totals(workspace)["pending"] == 4


def test_send_without_terminal_or_yes_refuses(run, workspace, server):
    controller, _ = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    result = run("send", "t", ok=False)
    assert result.exit_code == 1
    assert "not a terminal, so nobody can confirm: run `listkit send t --yes`" in result.output


def test_dry_run_writes_one_eml_per_recipient_and_sends_nothing(run, workspace, server, tmp_path):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    out = tmp_path / "out"
    assert run("send", "t", "--dry-run", str(out)).output == (
        f"Wrote 6 messages to {out}; nothing was sent.\n"
    )
    assert len(list(out.glob("*.eml"))) == 6
    assert handler.messages == []
    listed = json.loads(run("campaigns", "ls", "--json").output)
    assert [c["sent"] for c in listed if c["campaign"] == "t"] == [0]


HELD = [f"h{i}@example.com" for i in range(20)]


def database_digest(workspace):
    """The database's whole content, as SQL: equal digests, nothing was written."""
    import hashlib

    ws = Workspace(workspace)
    try:
        return hashlib.sha256("\n".join(ws.db.conn.iterdump()).encode()).hexdigest()
    finally:
        ws.close()


def held_out_of(addresses, share):
    from listkit.addresses import email_key
    from listkit.send.campaigns import held_out

    held = {a for a in addresses if held_out("t", email_key(a), share)}
    assert 0 < len(held) < len(addresses)  # the world these tests need
    return held


def test_a_dry_run_writes_no_message_for_the_held_out_and_nothing_to_the_database(
    run, workspace, tmp_path, free_port
):
    setup_campaign(run, workspace, free_port, HELD, extra="holdout = 0.3\n")
    held = held_out_of(HELD, 0.3)
    before = database_digest(workspace)
    out = tmp_path / "out"
    mailed = len(HELD) - len(held)
    assert run("send", "t", "--dry-run", str(out)).output == (
        f"Wrote {mailed} messages to {out} ({len(held)} more held out: never mailed); "
        "nothing was sent.\n"
    )
    written = {p.name.split("-", 1)[1].removesuffix(".eml") for p in out.glob("*.eml")}
    assert written == set(HELD) - held
    assert database_digest(workspace) == before


def test_campaigns_check_counts_the_held_out_apart_from_the_messages_ready_to_send(
    run, workspace, free_port
):
    setup_campaign(run, workspace, free_port, HELD, extra="holdout = 0.3\n")
    held = held_out_of(HELD, 0.3)
    before = database_digest(workspace)
    out = run("campaigns", "check", "t").output
    mailed = len(HELD) - len(held)
    assert f"  blog: {len(HELD)} recipients\n" in out
    assert out.endswith(
        f"OK: {mailed} messages render; ready to send ({len(held)} more held out: never mailed).\n"
    )
    assert database_digest(workspace) == before


def test_status_without_a_campaign_shows_every_campaign(run, workspace, free_port):
    setup_campaign(run, workspace, free_port, ADDRS, extra="holdout = 0.3\n")
    (workspace / "campaigns" / "later.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    ws = Workspace(workspace)
    try:
        from tests.world import World

        w = World(ws.db)
        cid = w.campaign("t")
        w.deliver(cid, "r0@example.com", "blog")
        w.deliver(cid, "r1@example.com", "blog", state="failed", code=550)
        w.deliver(cid, "r2@example.com", "blog", state="held_out")
    finally:
        ws.close()
    data = json.loads(run("status", "--json").output)
    by = {c["campaign"]: c for c in data}
    assert by["t"]["state"] == "done"
    assert by["t"]["counts"]["sent"] == 1 and by["t"]["counts"]["failed"] == 1
    assert by["later"]["state"] == "manual" and by["later"]["counts"] == {}
    assert set(by) >= {"t", "later", "launch"}  # and the workspace's own examples
    table = run("status").output
    line = next(x for x in table.splitlines() if x.split()[:1] == ["t"])
    assert line.split()[:5] == ["t", "done", "1", "1", "1"]  # state, sent, failed, held out
    assert "listkit status CAMPAIGN" in table  # where the details are


def test_status_of_a_campaign_not_sent_yet_says_so_and_how_to_send_it(run, workspace, free_port):
    setup_campaign(run, workspace, free_port, ADDRS)
    out = run("status", "t").output
    assert out == (
        "Campaign t: manual, not sent yet\n"
        "  `listkit campaigns check t` shows who it would go to; `listkit send t` sends it.\n"
    )
    data = json.loads(run("status", "t", "--json").output)
    assert data["campaign"] == "t" and data["state"] == "manual"
    assert set(data["counts"].values()) == {0}
    assert data["problems"] == [] and data["held_back"] == [] and data["skipped"] == {}
    assert "no campaign 'nope'" in run("status", "nope", ok=False).output


def test_test_to_sends_one_sample_and_records_nothing(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    out = run("send", "t", "--test-to", "me@example.com").output
    assert out.startswith("Sent a test of t to me@example.com")
    assert list(handler.recipients()) == ["me@example.com"]
    ws = Workspace(workspace)
    assert ws.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
    ws.close()


def test_campaigns_check_reports_audience_and_renders(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    out = run("campaigns", "check", "t").output
    assert "blog: 6 recipients" in out and "OK: 6 messages render" in out
    assert handler.messages == []


def test_campaigns_check_fails_on_missing_settings_without_connecting(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    env = (workspace / ".env").read_text().replace("LISTKIT_POSTAL_ADDRESS=", "#")
    (workspace / ".env").write_text(env)
    result = run("campaigns", "check", "t", ok=False)
    assert "LISTKIT_POSTAL_ADDRESS is not set" in result.output
    assert handler.rcpt_attempts == {}


def test_campaign_file_errors_name_file_and_field(run, workspace):
    (workspace / "campaigns" / "bad.toml").write_text('offer = "launch"\nlists = []\n')
    result = run("campaigns", "check", "bad", ok=False)
    assert result.output == (
        f"Error: {workspace / 'campaigns' / 'bad.toml'}: field lists must be a non-empty list "
        "of list names\n"
    )
    (workspace / "campaigns" / "bad.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nsend_at = "2026-12-01T09:00:00"\n'
    )
    result = run("campaigns", "check", "bad", ok=False)
    assert "field send_at 2026-12-01T09:00:00 has no UTC offset" in result.output


def test_non_ascii_address_needs_smtputf8_and_does_not_stop_the_run(run, workspace):
    controller, handler = smtp_server.start(enable_SMTPUTF8=False)
    try:
        setup_campaign(run, workspace, controller.port, ["josé@example.com", *ADDRS[:2]])
        run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    r = rows(workspace)
    assert r["josé@example.com"][0] == "failed"
    assert set(handler.recipients()) == set(ADDRS[:2])
    status = run("status", "t").output
    assert "does not offer SMTPUTF8" in status


def test_non_ascii_address_is_sent_with_smtputf8(run, workspace):
    controller, handler = smtp_server.start(enable_SMTPUTF8=True)
    try:
        setup_campaign(run, workspace, controller.port, ["josé@example.com", ADDRS[0]])
        run("send", "t", "--yes")
    finally:
        controller.stop()
    assert set(handler.recipients()) == {"josé@example.com", ADDRS[0]}


def _when(**delta) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(**delta)).isoformat(timespec="seconds")


def test_send_due_leaves_manual_and_waiting_campaigns_alone(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS, extra=f'send_at = "{_when(hours=2)}"\n')
    result = run("send", "--due")
    assert result.output == ""
    assert handler.messages == []
    assert "waiting" in run("campaigns", "ls").output
    # The shipped example has no send_at: cron never mails it by itself.
    assert "launch" in run("campaigns", "ls").output and "manual" in run("campaigns", "ls").output


def test_send_due_sends_a_due_campaign_once(run, workspace, server):
    controller, handler = server
    setup_campaign(
        run,
        workspace,
        controller.port,
        ADDRS,
        extra=f'send_at = "{_when(hours=-1)}"\nmax_late = "6h"\n',
    )
    assert run("send", "--due").output.startswith("t: this run 6 sent")
    assert run("send", "--due").output == ""  # done: nothing more
    assert handler.recipients() == {a: 1 for a in ADDRS}


def test_send_due_marks_a_late_campaign_missed_and_sends_nothing(run, workspace, server):
    controller, handler = server
    setup_campaign(
        run,
        workspace,
        controller.port,
        ADDRS,
        extra=f'send_at = "{_when(days=-2)}"\nmax_late = "6h"\n',
    )
    out = run("send", "--due").output
    assert out.startswith("t: missed (send_at ")
    assert "was 2d ago, more than max_late 6h; not sent" in out
    assert handler.messages == []
    assert run("send", "--due").output == ""
    rows = json.loads(run("campaigns", "ls", "--json").output)
    assert [r["state"] for r in rows if r["campaign"] == "t"] == ["missed"]


def test_retry_reopens_a_finished_campaign_for_send_due(run, workspace, server):
    controller, handler = server
    setup_campaign(
        run,
        workspace,
        controller.port,
        ADDRS[:3],
        extra=f'send_at = "{_when(hours=-1)}"\n',
        timeout=1,
    )
    handler.fault("r1@example.com", "disconnect_after_data")
    run("send", "--due", ok=False)
    assert json.loads(run("status", "t", "--json").output)["state"] == "done"
    assert run("retry", "t", "--unknown").output.startswith("1 unknown messages of t")
    assert json.loads(run("status", "t", "--json").output)["state"] == "sending"
    assert run("send", "--due").output.startswith("t: this run 1 sent")
    assert handler.recipients()["r1@example.com"] == 2  # sent again, as the user asked


def test_format_duration():
    from datetime import timedelta

    from listkit.send.campaigns import format_duration, parse_duration

    assert format_duration(timedelta(days=2, hours=3)) == "2d3h"
    assert format_duration(parse_duration("90m", "x")) == "1h30m"
    assert format_duration(timedelta(0)) == "0s"


# --- campaign names and files ---------------------------------------------------------------


SPELLINGS = ["./t", "../campaigns/t", "campaigns/../t", "T", "t.toml", "../outside/x", "t/"]


def _bad_name(spelling: str) -> str:
    return (
        f"Error: campaign name {spelling!r} is not valid: use lower-case letters, digits, "
        "- and _ (at most 64, starting with a letter or digit)\n"
    )


def test_another_spelling_of_a_campaign_name_is_refused_and_mails_nobody_again(
    run, workspace, server
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2])
    (workspace / "outside").mkdir()
    (workspace / "outside" / "x.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    run("send", "t", "--yes")
    for spelling in SPELLINGS:
        result = run("send", spelling, "--yes", ok=False)
        assert (result.exit_code, result.output) == (1, _bad_name(spelling))
    assert handler.recipients() == {a: 1 for a in ADDRS[:2]}
    ws = Workspace(workspace)
    assert [r[0] for r in ws.db.execute("SELECT slug FROM campaigns")] == ["t"]
    ws.close()


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["retry", "--unknown"],
        ["campaigns", "check"],
        ["send", "--test-to", "me@example.com"],
        ["send", "--dry-run", "out"],
    ],
)
def test_every_command_taking_a_campaign_name_refuses_another_spelling(run, workspace, command):
    (workspace / "campaigns" / "t.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    run("lists", "create", "blog")
    for spelling in ("./t", "../campaigns/t"):
        args = [*command[:1], *command[1:2], spelling, *command[2:]]
        if command[0] == "send":
            args = ["send", spelling, *command[1:]]
        result = run(*args, ok=False)
        assert (result.exit_code, result.output) == (1, _bad_name(spelling))


def test_a_bad_campaign_file_is_that_campaigns_error_and_the_others_are_still_sent(
    run, workspace, server
):
    controller, handler = server
    setup_campaign(
        run, workspace, controller.port, ADDRS[:3], extra=f'send_at = "{_when(hours=-1)}"\n'
    )
    campaigns = workspace / "campaigns"
    (campaigns / "a.toml").write_bytes(b'offer = "launch"\nlists = ["blog"]\n# caf\xe9\n')
    (campaigns / "b.toml").write_text(
        f'offer = "launch"\nlists = ["blog"]\nsend_at = "{_when(hours=-1)}"\n'
        'max_late = "99999999999999d"\n'
    )
    (campaigns / "Bad Name.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    result = run("send", "--due", ok=False)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(
        "Bad Name: campaign name 'Bad Name' is not valid: use lower-case letters"
    )
    assert lines[1] == (
        f"a: {campaigns / 'a.toml'}: not UTF-8 (line 3, byte 0xe9): save the file as UTF-8"
    )
    assert lines[2] == (
        f"b: {campaigns / 'b.toml'}: field max_late '99999999999999d' is too long: at most 366d"
    )
    assert lines[3].startswith("t: this run 3 sent")
    assert handler.recipients() == {a: 1 for a in ADDRS[:3]}
    # `campaigns ls` shows every campaign, the bad ones with their error, and says so.
    result = run("campaigns", "ls", "--json", ok=False)
    assert result.exit_code == 1
    shown = {r["campaign"]: r["state"] for r in json.loads(result.stdout)}
    assert shown["t"] == "done" and shown["launch"] == "manual"
    assert shown["a"].startswith("ERROR: ") and "not UTF-8" in shown["a"]


def test_campaigns_ls_and_status_show_a_follow_up_whose_first_campaigns_file_is_broken(
    run, workspace
):
    campaigns = workspace / "campaigns"
    (campaigns / "open.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    (campaigns / "again.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nfollows = "open"\nafter = "2d"\n'
    )
    (campaigns / "nudge.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nfollows = "again"\nafter = "2d"\n'
    )
    run("lists", "create", "blog")
    (campaigns / "again.toml").write_text('offer = "launch"\nfollows = = "open"\n')
    result = run("campaigns", "ls", "--json", ok=False)
    assert result.exit_code == 1
    shown = {r["campaign"]: r["state"] for r in json.loads(result.stdout)}
    assert shown["open"] == "manual"
    assert shown["again"].startswith("ERROR: ")
    assert shown["nudge"].startswith("ERROR: ") and "again.toml" in shown["nudge"]
    assert {r["campaign"] for r in json.loads(run("status", "--json").output)} >= {
        "open",
        "again",
        "nudge",
    }


def test_dry_run_lists_every_recipient_that_cannot_be_rendered_and_writes_the_others(
    run, workspace, server, tmp_path
):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, [])
    offer = workspace / "offers" / "launch" / "text.j2"
    offer.write_text("Your plan: {{ subscriber.plan }}\n" + offer.read_text())
    for i, address in enumerate(ADDRS):
        extra = ["--field", "plan=pro"] if i % 2 else []
        run("subscribers", "add", address, "--list", "blog", *extra)
    out = tmp_path / "out"
    result = run("send", "t", "--dry-run", str(out), ok=False)
    assert result.exit_code == 1
    bad = [ADDRS[0], ADDRS[2], ADDRS[4]]
    assert result.stderr.splitlines() == [
        *(
            f"  {a}: launch/text.j2, line 1: 'dict object' has no attribute 'plan' (for {a})"
            for a in bad
        ),
        "Error: campaign t: 3 of 6 recipients cannot be rendered (listed above); "
        f"the other 3 are in {out}. Nothing was sent.",
    ]
    written = sorted(p.name for p in out.glob("*.eml"))
    assert len(written) == 3 and all(a in " ".join(written) for a in ADDRS[1::2])
    assert handler.messages == []


def test_campaigns_check_lists_and_counts_every_recipient_that_cannot_be_rendered(
    run, workspace, server, tmp_path
):
    controller, _handler = server
    setup_campaign(run, workspace, controller.port, [])
    offer = workspace / "offers" / "launch" / "text.j2"
    offer.write_text("Your plan: {{ subscriber.plan }}\n" + offer.read_text())
    people = tmp_path / "people.csv"
    people.write_text(
        "email,plan\n" + "".join(f"p{i}@example.com,\n" for i in range(55)) + "ok@x.org,pro\n"
    )
    # An empty plan column is no field at all: those 55 cannot be rendered.
    run("subscribers", "import", str(people), "--list", "blog")
    result = run("campaigns", "check", "t", ok=False)
    lines = result.stderr.splitlines()
    assert len([x for x in lines if "has no attribute 'plan'" in x]) == 55
    assert lines[-1] == "Error: campaign t: 55 of 56 messages fail to render"


def test_a_missed_campaign_whose_send_at_is_moved_is_due_again(run, workspace, server):
    controller, handler = server
    late = f'send_at = "{_when(days=-2)}"\nmax_late = "6h"\n'
    setup_campaign(run, workspace, controller.port, ADDRS[:2], extra=late)
    assert run("send", "--due").output.startswith("t: missed")
    path = workspace / "campaigns" / "t.toml"
    text = path.read_text()
    # Moved into the future: waiting, not missed, and not sent yet.
    path.write_text(text.replace(late, f'send_at = "{_when(hours=2)}"\nmax_late = "6h"\n'))
    assert run("send", "--due").output == ""
    rows = json.loads(run("campaigns", "ls", "--json").output)
    assert [r["state"] for r in rows if r["campaign"] == "t"] == ["waiting"]
    # Moved to an hour ago, within max_late: sent, once.
    path.write_text(text.replace(late, f'send_at = "{_when(hours=-1)}"\nmax_late = "6h"\n'))
    assert run("send", "--due").output.startswith("t: this run 2 sent")
    assert run("send", "--due").output == ""
    assert handler.recipients() == {a: 1 for a in ADDRS[:2]}


# --- top-up ---------------------------------------------------------------------------------


def test_top_up_mails_each_newcomer_of_a_finished_campaign_exactly_once(
    run, workspace, server, tmp_path
):
    from listkit.send.campaigns import held_out

    controller, handler = server
    first = [f"a{i}@example.com" for i in range(20)]
    setup_campaign(
        run,
        workspace,
        controller.port,
        first,
        extra='holdout = 0.25\nexclude_lists = ["buyers"]\n',
        lists=("blog", "buyers"),
    )
    run("send", "t", "--yes")
    newcomers = [f"n{i}@example.com" for i in range(40)]
    people = tmp_path / "new.csv"
    people.write_text("email\n" + "\n".join(newcomers) + "\n")
    run("subscribers", "import", str(people), "--list", "blog")
    run("suppress", "add", newcomers[0])
    run("subscribers", "add", newcomers[1], "--list", "buyers")
    # A plain send of a finished campaign mails nobody new: its audience was fixed.
    assert run("send", "t", "--yes").output.startswith("t: this run nothing")
    assert not set(handler.recipients()) & set(newcomers)

    out = run("send", "t", "--top-up", "--yes").output
    expected_new = [a for a in newcomers[2:] if not held_out("t", a, 0.25)]
    assert out.startswith(
        f"t: top-up: {len(newcomers) - 2} newcomers ({len(newcomers) - 2 - len(expected_new)} "
        "held out)\n"
    )
    assert run("send", "t", "--top-up", "--yes").output.startswith(
        "t: top-up: 0 newcomers (0 held out)\n"
    )
    expected = [a for a in first if not held_out("t", a, 0.25)] + expected_new
    assert handler.recipients() == {a: 1 for a in expected}
    t = totals(workspace)
    assert t["sent"] + t["held_out"] == len(first) + len(newcomers) - 2
    assert 0 < len(expected_new) < len(newcomers) - 2  # some newcomers were held out


def test_top_up_needs_a_campaign_that_was_sent(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2])
    result = run("send", "t", "--top-up", "--yes", ok=False)
    assert result.output == (
        "Error: campaign t has not been sent yet, so it has no newcomers: "
        "send it with `listkit send t`\n"
    )
    assert handler.messages == []
    result = run("send", "--due", "--top-up", ok=False)
    assert result.exit_code == 2 and "--top-up" in result.output


def test_dry_run_messages_hold_personal_data_and_are_written_0600(run, workspace, server, tmp_path):
    import os
    import stat

    controller, _handler = server
    setup_campaign(run, workspace, controller.port, ADDRS[:2])
    out = tmp_path / "out"
    run("send", "t", "--dry-run", str(out))
    modes = {stat.S_IMODE(os.stat(f).st_mode) for f in out.glob("*.eml")}
    assert modes == {0o600}


def test_top_up_of_a_campaign_first_sent_to_nobody_mails_the_newcomers(run, workspace, server):
    controller, handler = server
    setup_campaign(run, workspace, controller.port, [])
    run("send", "t", "--yes")
    for address in ADDRS[:2]:
        run("subscribers", "add", address, "--list", "blog")
    assert run("send", "t", "--top-up", "--yes").output.startswith("t: top-up: 2 newcomers")
    assert handler.recipients() == {a: 1 for a in ADDRS[:2]}


def test_a_dry_run_folder_that_cannot_be_made_is_named_in_the_error(run, workspace, tmp_path):
    (workspace / "campaigns" / "t.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    run("lists", "create", "blog")
    (tmp_path / "afile").write_text("")
    where = tmp_path / "afile" / "out"
    result = run("send", "t", "--dry-run", str(where), ok=False)
    assert (
        result.output == f"Error: --dry-run {where}: cannot create the folder (Not a directory)\n"
    )


def test_a_sender_address_smtp_cannot_carry_stops_the_send_and_fails_no_recipient(
    run, workspace, monkeypatch
):
    controller, handler = smtp_server.start(pipelining=True)
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        monkeypatch.setenv("LISTKIT_FROM", 'Shop <"shop team"@example.com>')
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert result.output == (
        "Error: LISTKIT_FROM: '\"shop team\"@example.com' cannot be the envelope sender "
        "(MAIL FROM): a space, a control character, < or > is not allowed there; use a "
        "plain address such as you@example.com\n"
    )
    assert handler.messages == []
    ws = Workspace(workspace)
    try:
        states = ws.db.execute("SELECT state FROM deliveries").fetchall()
    finally:
        ws.close()
    assert ("failed",) not in states


def test_a_sender_with_a_non_ascii_local_part_is_refused_before_anything_is_sent(
    run, workspace, monkeypatch
):
    # Most servers cannot carry it (SMTPUTF8), and the From header could not be built:
    # a one-line error, not a traceback, and no recipient failed for the sender's sake.
    controller, handler = smtp_server.start(enable_SMTPUTF8=False)
    try:
        setup_campaign(run, workspace, controller.port, ADDRS[:3])
        monkeypatch.setenv("LISTKIT_FROM", "Jörg <jörg@example.com>")
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert result.output == (
        "Error: LISTKIT_FROM: the address jörg@example.com has a non-ASCII local part, "
        "which most mail servers cannot carry; use an ASCII address such as you@example.com\n"
    )
    assert handler.messages == []
    assert rows(workspace) == {}


def links_in(data: bytes) -> list[str]:
    from email import message_from_bytes
    from email.policy import default

    text = message_from_bytes(data, policy=default).get_body(("plain",)).get_content()
    return [w.strip("<>()") for w in text.split() if w.startswith(("http", "<http"))]


def test_test_to_and_dry_run_messages_link_straight_to_the_shop_not_to_unrecorded_clicks(
    run, workspace, server, tmp_path
):
    # Their tokens are in no delivery: a /c/ link would answer 404.
    controller, handler = server
    setup_campaign(run, workspace, controller.port, ADDRS)
    run("send", "t", "--test-to", "me@example.com")
    out = tmp_path / "out"
    run("send", "t", "--dry-run", str(out))
    messages = [handler.messages[0][2]] + [p.read_bytes() for p in sorted(out.glob("*.eml"))]
    assert len(messages) == 7
    for data in messages:
        shop = [u for u in links_in(data) if u.startswith("https://shop.example.com/")]
        assert shop and all("utm_campaign=t" in u and "lk=" in u for u in shop)
        assert not [u for u in links_in(data) if "/c/" in u]
