"""The SMTP transaction layer: wire form, reply parsing, pipelining on the wire."""

import asyncio
import json
import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listkit.send.smtp import ConnectionLost, Reply, _Replies, path, wire_form
from tests.smtp_server import free_port
from tests.test_send import rows, setup_campaign, totals


def test_wire_form_normalises_line_ends_and_stuffs_dots():
    assert wire_form(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n.\r\n"
    assert wire_form(b".starts\r\n..two\r\nmid.dle\r\n.\r\n") == (
        b"..starts\r\n...two\r\nmid.dle\r\n..\r\n.\r\n"
    )
    assert wire_form(b"") == b"\r\n.\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\n."]), max_size=30))
def test_wire_form_is_the_plain_normalise_then_stuff_for_any_line_ends_and_dots(parts):
    import re

    message = b"".join(parts)
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    expected += b"" if expected.endswith(b"\r\n") else b"\r\n"
    assert wire_form(message) == re.sub(rb"(?m)^\.", b"..", expected) + b".\r\n"


def test_path_refuses_what_could_break_a_command():
    assert path("ann@example.com", False) == b"<ann@example.com>"
    assert path("zoë@example.com", True) == "<zoë@example.com>".encode()
    for bad in ("a\r\nRCPT TO:<x@y>@example.com", "a b@example.com", "a>@example.com", "a\x00@x"):
        with pytest.raises(ValueError, match="not allowed"):
            path(bad, False)


def feed(*chunks: bytes, waiters: int = 1) -> list:
    loop = asyncio.new_event_loop()
    try:
        replies = _Replies(loop)
        futures = [replies.expect() for _ in range(waiters)]
        for chunk in chunks:
            replies.data_received(chunk)
        return [f.result() if f.done() and not f.exception() else f for f in futures]
    finally:
        loop.close()


def test_replies_are_parsed_across_packets_and_handed_out_in_order():
    assert feed(b"250-first\r\n250-sec", b"ond\r\n250 last\r\n") == [
        Reply(250, "first\nsecond\nlast")
    ]
    assert feed(
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with", b" <CR><LF>.<CR><LF>\r\n", waiters=3
    ) == [
        Reply(250, "2.1.0 Ok"),
        Reply(250, "2.1.5 Ok"),
        Reply(354, "End data with <CR><LF>.<CR><LF>"),
    ]
    # A reply nobody waits for is dropped, not kept for the next command.
    assert feed(b"250 ok\r\n421 unsolicited\r\n", waiters=1) == [Reply(250, "ok")]


def test_a_broken_connection_fails_every_waiting_reply():
    loop = asyncio.new_event_loop()
    try:
        replies = _Replies(loop)
        first, second = replies.expect(), replies.expect()
        replies.data_received(b"250 ok\r\n")
        replies.connection_lost(ConnectionResetError("reset"))
        assert first.result() == Reply(250, "ok")
        assert isinstance(second.exception(), ConnectionLost)
        later = replies.expect()  # after the loss: fails at once
        assert isinstance(later.exception(), ConnectionLost)
    finally:
        loop.close()


def test_malformed_and_over_long_replies_break_the_connection():
    (bad,) = feed(b"hello there\r\n")
    assert isinstance(bad.exception(), ConnectionLost)
    (long,) = feed(b"250-" + b"x" * 40_000)
    assert isinstance(long.exception(), ConnectionLost)


class RecordingServer:
    """A minimal SMTP server that records what each read from the socket brought."""

    def __init__(
        self,
        pipelining: bool,
        *,
        extensions: tuple[bytes, ...] = (b"8BITMIME",),
        final_reply: bytes | None = b"250 2.0.0 queued",  # None: never answer
        replies: dict[bytes, bytes] | None = None,
    ):
        self.pipelining = pipelining
        self.extensions = extensions
        self.final_reply = final_reply  # the answer to every final dot
        self.replies = replies or {}  # verb -> reply line, instead of 250 ok
        self.commands: list[bytes] = []
        self.data: list[bytes] = []  # each message's content
        self.reads: list[bytes] = []
        self.messages = 0
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.started.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port)
        )
        self.started.set()
        self.loop.run_forever()
        server.close()

    async def _session(self, reader, writer):
        writer.write(b"220 recorder ESMTP\r\n")
        pending, in_data = b"", False
        while chunk := await reader.read(65536):
            self.reads.append(chunk)
            pending += chunk
            while True:
                if in_data:
                    end = pending.find(b"\r\n.\r\n")
                    if end == -1:
                        break
                    self.data.append(pending[: end + 2])
                    pending, in_data = pending[end + 5 :], False
                    self.messages += 1
                    if self.final_reply is not None:
                        writer.write(self.final_reply + b"\r\n")
                    continue
                line, sep, rest = pending.partition(b"\r\n")
                if not sep:
                    break
                pending = rest
                self.commands.append(line)
                verb = line.split(b" ")[0].split(b":")[0].upper()
                if verb in self.replies:
                    writer.write(self.replies[verb] + b"\r\n")
                elif verb in (b"EHLO", b"HELO"):
                    offered = (b"PIPELINING",) * self.pipelining + self.extensions
                    writer.write(
                        b"250-recorder\r\n"
                        + b"".join(b"250-" + x + b"\r\n" for x in offered[:-1])
                        + b"250 "
                        + offered[-1]
                        + b"\r\n"
                    )
                elif verb == b"DATA":
                    in_data = True
                    writer.write(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                else:
                    writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_envelope_and_data_go_in_one_write_only_when_the_server_offers_pipelining(
    run, workspace, pipelining
):
    addresses = [f"p{i}@example.com" for i in range(5)]
    with RecordingServer(pipelining) as server:
        setup_campaign(run, workspace, server.port, addresses)
        run("send", "t", "--yes")
    assert server.messages == 5
    assert totals(workspace)["sent"] == 5
    grouped = [r for r in server.reads if b"MAIL FROM:" in r and b"RCPT TO:" in r]
    if pipelining:
        assert len(grouped) == 5
        assert all(r.endswith(b"\r\nDATA\r\n") for r in grouped)
    else:
        assert grouped == []
        assert sum(r.startswith(b"MAIL FROM:") for r in server.reads) == 5
    assert json.loads(run("status", "t", "--json").output)["counts"]["sent"] == 5


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    "final_reply", [b"2_0 queued", b" 25 queued", b"+25 queued", b"150 what", b"354 again"]
)
def test_a_malformed_or_unexpected_reply_to_the_final_dot_leaves_the_row_unknown(
    run, workspace, pipelining, final_reply
):
    addresses = ["m0@example.com", "m1@example.com"]
    with RecordingServer(pipelining, final_reply=final_reply) as server:
        setup_campaign(run, workspace, server.port, addresses)
        result = run("send", "t", "--yes", ok=False)
        assert result.exit_code == 1
        assert totals(workspace)["unknown"] == 2
        run("send", "t", "--yes", ok=False)  # a second run resends nothing
    assert server.messages == 2
    problems = json.loads(run("status", "t", "--json").output)["problems"]
    assert {p["state"] for p in problems} == {"unknown"}
    assert all("final dot" in p["reply"] for p in problems), problems


def test_a_timeout_after_the_final_dot_says_how_long_it_waited(run, workspace):
    with RecordingServer(True, final_reply=None) as server:
        setup_campaign(run, workspace, server.port, ["slow@example.com"], timeout=1)
        run("send", "t", "--yes", ok=False)
    (problem,) = json.loads(run("status", "t", "--json").output)["problems"]
    assert (problem["state"], problem["reply"]) == (
        "unknown",
        "no reply to the final dot: timed out after 1 s",
    )


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("rcpt_reply", "state", "reply"),
    [
        (b"354 go ahead", "deferred", "unexpected reply to RCPT TO: 354 go ahead"),
        (b"550 5.1.1 no such user", "failed", "5.1.1 no such user (reply to RCPT TO)"),
        (b"451 4.3.0 try later", "deferred", "4.3.0 try later (reply to RCPT TO)"),
    ],
)
def test_a_refused_or_odd_envelope_reply_names_the_command_it_answered(
    run, workspace, pipelining, rcpt_reply, state, reply
):
    with RecordingServer(pipelining, replies={b"RCPT": rcpt_reply}) as server:
        setup_campaign(run, workspace, server.port, ["odd@example.com"])
        run("send", "t", "--yes", ok=False)
    assert server.messages == 0
    (problem,) = json.loads(run("status", "t", "--json").output)["problems"]
    assert (problem["state"], problem["reply"]) == (state, reply)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_message_over_the_servers_size_limit_fails_before_upload_and_the_rest_go(
    run, workspace, pipelining
):
    addresses = ["a@example.com", "b@example.com", "c@example.com"]
    with RecordingServer(pipelining) as probe:  # how big is one message?
        setup_campaign(run, workspace, probe.port, addresses[:1])
        run("send", "t", "--yes")
    size = len(probe.data[0]) + 3  # the content, its final dot included
    (workspace / "campaigns" / "t.toml").unlink()
    (workspace / "campaigns" / "u.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nconcurrency = 1\n'
    )
    for address in addresses[1:]:
        run("subscribers", "add", address, "--list", "blog")
    # One subscriber has a long name: only that message is over the limit.
    run("subscribers", "add", "c@example.com", "--list", "blog", "--name", "C" * 250)
    limit = size + 100
    with RecordingServer(pipelining, extensions=(b"SIZE %d" % limit,)) as server:
        env = (workspace / ".env").read_text().replace(str(probe.port), str(server.port))
        (workspace / ".env").write_text(env)
        result = run("send", "u", "--yes", ok=False)
    assert result.exit_code == 1
    mails = [c for c in server.commands if c.startswith(b"MAIL FROM:")]
    assert len(mails) == 2 and all(b" SIZE=" in m for m in mails)
    assert all(int(m.split(b"SIZE=")[1].split()[0]) <= limit for m in mails)
    assert server.messages == 2
    problems = json.loads(run("status", "u", "--json").output)["problems"]
    assert [(p["email"], p["state"]) for p in problems] == [("c@example.com", "failed")]
    assert problems[0]["reply"].startswith("the message is ")
    assert f"over the server's limit of {limit:,} bytes (SIZE)" in problems[0]["reply"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_an_idn_domain_goes_as_a_labels_to_a_server_without_smtputf8(run, workspace, pipelining):
    with RecordingServer(pipelining) as server:
        setup_campaign(run, workspace, server.port, ["anna@bücher.example", "jörg@example.com"])
        run("send", "t", "--yes", ok=False)
    rcpts = [c for c in server.commands if c.startswith(b"RCPT TO:")]
    assert rcpts == [b"RCPT TO:<anna@xn--bcher-kva.example>"]
    assert server.messages == 1
    assert b"\r\nTo: <anna@xn--bcher-kva.example>\r\n" in server.data[0]
    (problem,) = json.loads(run("status", "t", "--json").output)["problems"]
    assert (problem["email"], problem["state"]) == ("jörg@example.com", "failed")
    assert problem["reply"] == (
        "the recipient's address has a non-ASCII local part and the server does not offer SMTPUTF8"
    )


def test_test_to_an_idn_domain_goes_as_a_labels_to_a_server_without_smtputf8(run, workspace):
    with RecordingServer(True) as server:
        setup_campaign(run, workspace, server.port, ["ann@example.com"])
        out = run("send", "t", "--test-to", "anna@bücher.example").output
    assert out.startswith("Sent a test of t to anna@bücher.example")
    assert [c for c in server.commands if c.startswith(b"RCPT TO:")] == [
        b"RCPT TO:<anna@xn--bcher-kva.example>"
    ]
    assert b"\r\nTo: <anna@xn--bcher-kva.example>\r\n" in server.data[0]


def test_test_to_a_non_ascii_local_part_without_smtputf8_is_a_one_line_error(run, workspace):
    with RecordingServer(True) as server:
        setup_campaign(run, workspace, server.port, ["ann@example.com"])
        result = run("send", "t", "--test-to", "jörg@example.com", ok=False)
    assert result.output == (
        "Error: the message was not sent: the recipient's address has a non-ASCII local "
        "part and the server does not offer SMTPUTF8\n"
    )
    assert server.messages == 0


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_test_message_goes_through_the_campaigns_transaction_with_the_bounce_envelope(
    run, workspace, pipelining
):
    with RecordingServer(pipelining, extensions=(b"8BITMIME", b"SIZE 10000000")) as server:
        setup_campaign(run, workspace, server.port, ["ann@example.com"], extra="")
        with (workspace / ".env").open("a") as f:
            f.write("LISTKIT_BOUNCE_ADDRESS=bounces@example.com\n")
        out = run("send", "t", "--test-to", "me@example.com").output
    assert out.startswith("Sent a test of t to me@example.com")
    assert out.rstrip().endswith(": 250 2.0.0 queued")
    (mail,) = [c for c in server.commands if c.startswith(b"MAIL FROM:")]
    assert re.fullmatch(rb"MAIL FROM:<bounces\+[a-z2-7]{16}@example\.com> SIZE=\d+", mail)
    size = int(mail.rsplit(b"=", 1)[1])
    assert size == len(server.data[0]) + 3  # the content in wire form, as campaigns count it
    together = [r for r in server.reads if b"MAIL FROM:" in r and b"RCPT TO:" in r]
    assert len(together) == (1 if pipelining else 0)


def test_a_test_message_over_the_servers_size_limit_is_refused_as_a_campaigns_is(run, workspace):
    with RecordingServer(True, extensions=(b"SIZE 1000",)) as server:
        setup_campaign(run, workspace, server.port, ["ann@example.com"])
        result = run("send", "t", "--test-to", "me@example.com", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the message was not sent: the message is ")
    assert "over the server's limit of 1,000 bytes (SIZE)" in result.output
    assert server.messages == 0 and not any(c.startswith(b"MAIL") for c in server.commands)


def test_a_test_message_refused_by_the_server_is_an_error_with_its_reply(run, workspace):
    replies = {b"RCPT": b"550 5.1.1 no such user"}
    with RecordingServer(True, replies=replies) as server:
        setup_campaign(run, workspace, server.port, ["ann@example.com"])
        result = run("send", "t", "--test-to", "me@example.com", ok=False)
    assert result.output == (
        "Error: the server refused the message: 550 5.1.1 no such user (reply to RCPT TO)\n"
    )
    assert server.messages == 0


def _three_senders_meet(workspace, ws, run, *, addresses, fault=None, **server):
    """A campaign to ``addresses[0]``, a test send to ``addresses[1]`` and a signup
    confirmation to ``addresses[2]``, on one aiosmtpd server (``fault`` injected for
    each address); what each recorded or said."""
    from tests import smtp_server
    from tests.test_pages import serve_once, waiting_signup

    controller, handler = smtp_server.start(**server)
    try:
        for address in addresses if fault else ():
            handler.fault(address, fault)
        setup_campaign(run, workspace, controller.port, addresses[:1])
        run("send", "t", "--yes", ok=False)
        test_send = run("send", "t", "--test-to", addresses[1], ok=False).output
        ws._settings = None  # the server's port, written by setup_campaign
        waiting_signup(ws, addresses[2])
        serve_once(ws)
    finally:
        controller.stop()
    (problem,) = json.loads(run("status", "t", "--json").output)["problems"]
    (confirmation,) = ws.db.execute("SELECT state, mail_reply FROM signups").fetchall()
    return handler, problem, test_send, confirmation


def test_a_campaign_a_test_send_and_a_confirmation_report_one_refusal_in_the_same_words(
    run, workspace, ws
):
    addresses = ["camp@example.com", "test@example.com", "confirm@example.com"]
    handler, problem, test_send, confirmation = _three_senders_meet(
        workspace, ws, run, addresses=addresses, fault="550"
    )
    said = "5.1.1 No such user here (reply to RCPT TO)"
    assert (problem["state"], problem["reply"]) == ("failed", said)
    assert test_send == f"Error: the server refused the message: 550 {said}\n"
    assert confirmation == ("failed", f"the server refused the message: 550 {said}")
    assert handler.messages == []
    assert sorted(handler.rcpt_attempts) == sorted(addresses)


def test_a_campaign_a_test_send_and_a_confirmation_meet_a_server_without_smtputf8_alike(
    run, workspace, ws
):
    addresses = ["jörg@example.com", "zoë@example.com", "ærlig@example.com"]
    handler, problem, test_send, confirmation = _three_senders_meet(
        workspace, ws, run, addresses=addresses, enable_SMTPUTF8=False
    )
    said = (
        "the recipient's address has a non-ASCII local part and the server does not offer SMTPUTF8"
    )
    assert (problem["state"], problem["reply"]) == ("failed", said)
    assert test_send == f"Error: the message was not sent: {said}\n"
    assert confirmation == ("failed", f"the message was not sent: {said}")
    assert handler.messages == [] and not handler.rcpt_attempts


def test_a_messages_content_and_the_next_messages_envelope_go_in_one_write(run, workspace):
    addresses = [f"a{i}@example.com" for i in range(12)]
    with RecordingServer(True) as server:
        setup_campaign(run, workspace, server.port, addresses)
        run("send", "t", "--yes")
    assert server.messages == 12 and totals(workspace)["sent"] == 12
    together = [r for r in server.reads if b"\r\n.\r\nMAIL FROM:" in r]
    assert together and all(r.endswith(b"\r\nDATA\r\n") for r in together)
    # Every message's content came after its own DATA's 354, once.
    assert sorted(server.data) == sorted(set(server.data))
    assert sum(r.count(b"RCPT TO:") for r in server.reads) == 12


def test_a_message_whose_envelope_went_ahead_on_a_closing_connection_goes_on_another(
    run, workspace
):
    # Every final dot is answered 421 (the server closes): the envelope that went
    # with it is void, and its message is tried on a new connection, not deferred
    # as lost.
    addresses = [f"c{i}@example.com" for i in range(6)]
    with RecordingServer(True, final_reply=b"421 4.3.0 closing") as server:
        setup_campaign(run, workspace, server.port, addresses)
        run("send", "t", "--yes", ok=False)
    assert server.messages == 6
    assert {state for state, _code, _attempts in rows(workspace).values()} == {"deferred"}
    assert {code for _state, code, _attempts in rows(workspace).values()} == {421}
