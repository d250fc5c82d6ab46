import errno
import mailbox
import os
import smtplib
import socket
import stat
import subprocess
import sys
import threading

import pytest

from listkit.send.sink import start_sink


def test_sink_captures_describes_and_stores_messages(tmp_path):
    lines: list[str] = []
    controller, handler = start_sink("127.0.0.1", 0, maildir=tmp_path / "md", out=lines.append)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port) as client:
            client.sendmail(
                "me@example.com",
                ["ann@example.com"],
                b"Subject: Hello\r\nMessage-ID: <m1@example.com>\r\n\r\nHi\r\n",
            )
    finally:
        controller.stop()
    assert handler.count == 1
    assert handler.message_ids == ["<m1@example.com>"]
    assert "from me@example.com to ann@example.com: Hello <m1@example.com>" in lines[0]
    stored = list(mailbox.Maildir(str(tmp_path / "md")))
    assert len(stored) == 1 and stored[0]["Subject"] == "Hello"
    # The envelope sender, as a mailbox's delivery agent records it: on top.
    (raw,) = (tmp_path / "md" / "new").iterdir()
    assert raw.read_bytes().startswith(b"Return-Path: <me@example.com>\r\nSubject: Hello\r\n")


def test_sink_records_a_null_sender_as_an_empty_return_path():
    from listkit.send.sink import return_path

    assert return_path("<>", b"Subject: x\r\n\r\nbody") == b"Return-Path: <>\r\n"
    assert return_path("", b"Subject: x\n\nbody") == b"Return-Path: <>\n"
    assert return_path("bounces+tok@example.com", b"A: b\r\n") == (
        b"Return-Path: <bounces+tok@example.com>\r\n"
    )


def test_sink_stores_messages_readable_by_their_owner_only(tmp_path):
    old = os.umask(0o022)
    controller, _handler = start_sink("127.0.0.1", 0, maildir=tmp_path / "md", out=print)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port) as client:
            client.sendmail("me@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nHi\r\n")
    finally:
        controller.stop()
        os.umask(old)
    (stored,) = (tmp_path / "md" / "new").iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "md").stat().st_mode) == 0o700
    assert [m["Subject"] for m in mailbox.Maildir(str(tmp_path / "md"))] == ["Hi"]


def test_sink_on_a_port_in_use_or_out_of_range_is_a_one_line_error(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sink", "--port", str(port), ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: listkit sink cannot listen on 127.0.0.1:{port} (address already in use): "
        "choose another --port or --host\n"
    )
    result = run("sink", "--port", "99999", ok=False)
    assert result.exit_code == 2
    assert "Invalid value for '--port': 99999 is not in the range 1<=x<=65535." in result.output


def test_sink_on_a_port_in_use_fails_before_it_waits_for_a_server_thread(monkeypatch):
    # aiosmtpd's Controller binds in its server thread and waits up to its
    # ready_timeout (5 s) for a thread that already failed: a user of
    # `listkit sink` waited 5 s for "address already in use".
    def no_waiting(self, timeout=None):
        raise AssertionError("the sink waited for a server thread that could not listen")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(threading.Event, "wait", no_waiting)
        with pytest.raises(OSError) as refused:
            start_sink("127.0.0.1", port, out=print)
    assert refused.value.errno == errno.EADDRINUSE


def test_sink_on_port_0_listens_on_a_free_port_it_reports(tmp_path):
    lines: list[str] = []
    controller, handler = start_sink("127.0.0.1", 0, out=lines.append)
    try:
        assert controller.port != 0
        with smtplib.SMTP("127.0.0.1", controller.port) as client:
            client.sendmail("me@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nHi\r\n")
    finally:
        controller.stop()
    assert handler.count == 1
    assert "from me@example.com to ann@example.com" in lines[0]


def test_listkit_sink_on_a_port_in_use_exits_with_one_line_without_waiting(workspace):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    command = [sys.executable, "-m", "listkit", "--workspace", str(workspace), "sink"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*command, "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,  # only bounds a test that would hang
        )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"Error: listkit sink cannot listen on 127.0.0.1:{port} (address already in use): "
        "choose another --port or --host\n"
    )


def test_sink_connections_have_nagle_off_as_asyncios_own_listeners_do():
    # asyncio sets TCP_NODELAY only on connections of a socket whose proto is
    # IPPROTO_TCP; a socket made with proto 0 made each pipelined reply of the
    # test server wait for a delayed ACK (a 3,006-message send took 68 s, not 8).
    controller, _handler = start_sink("127.0.0.1", 0, out=print)
    try:
        assert controller.sock.proto == socket.IPPROTO_TCP
    finally:
        controller.stop()
