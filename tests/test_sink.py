import mailbox
import smtplib

from listkit.send.sink import start_sink
from tests.smtp_server import free_port


def test_sink_captures_describes_and_stores_messages(tmp_path):
    lines: list[str] = []
    port = free_port()
    controller, handler = start_sink("127.0.0.1", port, maildir=tmp_path / "md", out=lines.append)
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
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
    import os
    import stat

    old = os.umask(0o022)
    port = free_port()
    controller, _handler = start_sink("127.0.0.1", port, maildir=tmp_path / "md", out=print)
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("me@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\nHi\r\n")
    finally:
        controller.stop()
        os.umask(old)
    (stored,) = (tmp_path / "md" / "new").iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "md").stat().st_mode) == 0o700
    assert [m["Subject"] for m in mailbox.Maildir(str(tmp_path / "md"))] == ["Hi"]


def test_sink_on_a_port_in_use_or_out_of_range_is_a_one_line_error(run):
    import socket

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
