"""The SMTP transaction layer: wire form, reply parsing, pipelining on the wire."""

import asyncio
import json
import threading

import pytest

from listkit.smtp import ConnectionLost, Reply, _Replies, path, wire_form
from tests.smtp_server import free_port
from tests.test_send import setup_campaign, totals


def test_wire_form_normalises_line_ends_and_stuffs_dots():
    assert wire_form(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n.\r\n"
    assert wire_form(b".starts\r\n..two\r\nmid.dle\r\n.\r\n") == (
        b"..starts\r\n...two\r\nmid.dle\r\n..\r\n.\r\n"
    )
    assert wire_form(b"") == b"\r\n.\r\n"


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

    def __init__(self, pipelining: bool):
        self.pipelining = pipelining
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
                    pending, in_data = pending[end + 5 :], False
                    self.messages += 1
                    writer.write(b"250 2.0.0 queued\r\n")
                    continue
                line, sep, rest = pending.partition(b"\r\n")
                if not sep:
                    break
                pending = rest
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                    writer.write(b"250-recorder\r\n" + extra + b"250 8BITMIME\r\n")
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
