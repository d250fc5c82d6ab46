"""Settings: the SMTP URL (percent-encoding, no password in any output), the
environment over .env, the .env file itself, the EHLO name."""

import json

import pytest

from listkit import config
from listkit.config import load_settings, parse_smtp_url
from listkit.errors import ConfigError
from tests.test_send import ADDRS, setup_campaign
from tests.test_smtp import RecordingServer

PASSWORD = "Pw/@:#x9Q"  # every character a URL could misread
ENCODED = "Pw%2F%40%3A%23x9Q"
URLS = [
    f"smtp://ann:{ENCODED}@127.0.0.1:{{port}}",  # well formed: the server refuses the login
    f"smtp://ann%40example.com:{ENCODED}@127.0.0.1:{{port}}",
    f"smtps://ann:{PASSWORD}@127.0.0.1:{{port}}",  # malformed: @ / # left as they are
    "smtps://ann:Pw/x9Q@127.0.0.1:587",
    "smtps://ann@example.com:Pwx9Q@127.0.0.1:1",
    "smtps://ann:Pw#x9Q@127.0.0.1:1",
    "smtps://ann:Pw?x9Q@127.0.0.1:1",
    "smtps://ann:Pw:x9Q@127.0.0.1:notaport",
]


def secret_parts(url: str) -> list[str]:
    return [PASSWORD, ENCODED, "Pw/", "Pw#", "Pw?", "x9Q"]


@pytest.mark.parametrize(
    "url",
    [
        "smtp+starttls://ann:pa/ss@mail.example.com:587",
        "smtp+starttls://ann@example.com:pass@mail.example.com",
        "smtps://ann:pa#ss@mail.example.com",
        "smtps://ann:pa?ss@mail.example.com",
        "smtps://ann:pa@ss@mail.example.com",
    ],
)
def test_unencoded_characters_in_the_credentials_are_an_error_that_names_the_fix(url):
    with pytest.raises(ConfigError) as e:
        parse_smtp_url(url)
    message = str(e.value)
    assert message.startswith("LISTKIT_SMTP_URL is malformed")
    assert "percent-encode" in message and "/ as %2F" in message and "@ as %40" in message
    assert "pa/ss" not in message and "pass" not in message.replace("password", "")
    assert "pa#ss" not in message and "pa?ss" not in message and "ss@" not in message


def test_percent_encoded_credentials_are_decoded():
    smtp = parse_smtp_url(f"smtp+starttls://ann%40example.com:{ENCODED}@mail.example.com:587")
    assert (smtp.username, smtp.password, smtp.host, smtp.port) == (
        "ann@example.com",
        PASSWORD,
        "mail.example.com",
        587,
    )


@pytest.mark.parametrize("url", URLS)
def test_no_command_shows_the_smtp_password(run, workspace, monkeypatch, url):
    run("lists", "create", "blog")
    run("lists", "create", "customers")
    run("subscribers", "add", "ann@example.com", "--list", "blog")
    outputs = []
    server = RecordingServer(
        True, extensions=(b"AUTH PLAIN LOGIN",), replies={b"AUTH": b"535 5.7.8 no"}
    )
    with server:
        monkeypatch.setenv("LISTKIT_SMTP_URL", url.format(port=server.port))
        for args in (
            ("config",),
            ("config", "--json"),
            ("campaigns", "check", "launch"),
            ("send", "launch", "--test-to", "me@example.com"),
            ("send", "launch", "--yes"),
        ):
            result = run(*args, ok=False)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                args,
                result.exception,
            )
            outputs.append(result.output)
    for output in outputs:
        for part in secret_parts(url):
            assert part not in output, (part, output)
    assert "****" in outputs[0]
    if url.startswith("smtp://"):  # well formed: the login was tried, once a command
        assert "refused the login" in outputs[3] and "refused the login" in outputs[4]
        assert sum(c.startswith(b"AUTH") for c in server.commands) == 2


def test_config_shows_a_user_name_with_an_at_sign_but_never_the_password(run, monkeypatch):
    monkeypatch.setenv("LISTKIT_SMTP_URL", "smtps://ann@example.com:hunter2@mail.example.com")
    out = json.loads(run("config", "--json").output)["LISTKIT_SMTP_URL"]["value"]
    assert "hunter2" not in out
    assert out == "smtps://****@mail.example.com"


def test_credentials_over_plain_smtp_to_a_remote_host_are_refused():
    with pytest.raises(ConfigError) as e:
        parse_smtp_url("smtp://ann:secret@mail.example.com:25")
    assert str(e.value) == (
        "LISTKIT_SMTP_URL: smtp:// would send the password for 'ann' unencrypted to "
        "mail.example.com: use smtp+starttls:// (port 587) or smtps:// (port 465), or add "
        "?insecure_auth=1 if the network to it is trusted"
    )
    assert parse_smtp_url("smtp://ann:secret@mail.example.com?insecure_auth=1").insecure_auth
    assert parse_smtp_url("smtp://ann:secret@127.0.0.1:1025").username == "ann"
    assert parse_smtp_url("smtp://ann:secret@localhost:1025").username == "ann"
    assert parse_smtp_url("smtp://ann:secret@[::1]:1025").username == "ann"
    assert parse_smtp_url("smtp://mail.example.com").username is None  # no credentials


def test_an_empty_environment_variable_overrides_env(workspace, monkeypatch):
    (workspace / ".env").write_text(
        (workspace / ".env").read_text() + "LISTKIT_SMTP_CA=/nowhere/ca.pem\n"
    )
    monkeypatch.setenv("LISTKIT_SMTP_CA", "")
    settings = load_settings(workspace)
    assert settings.values["LISTKIT_SMTP_CA"] is None
    assert settings.sources["LISTKIT_SMTP_CA"] == "environment (empty)"
    assert settings.smtp().ca_file is None


def test_an_env_file_that_is_not_utf8_is_a_one_line_error(run, workspace):
    (workspace / ".env").write_bytes(
        b"LISTKIT_DB=listkit.db\nLISTKIT_FROM=J\xf6rg <j@example.com>\n"
    )
    result = run("config", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {workspace / '.env'}, line 2: byte 0xf6 is not UTF-8; save the file as UTF-8\n"
    )


def test_a_nul_byte_in_the_env_file_is_a_one_line_error_naming_its_line(run, workspace):
    (workspace / ".env").write_bytes(
        b"LISTKIT_FROM=Ann <a@example.com>\nLISTKIT_DB=list\x00kit.db\n"
    )
    result = run("lists", "ls", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {workspace / '.env'}, line 2: a NUL byte (0x00); remove it, or save the "
        "file again as plain UTF-8 text\n"
    )


@pytest.mark.parametrize(
    ("setting", "fqdn", "expected"),
    [
        ("mail.example.org", "host.example.net", b"EHLO mail.example.org"),
        (None, "host.example.net", b"EHLO host.example.net"),
        (None, "localhost", b"EHLO example.com"),  # the From domain of the workspace
    ],
)
def test_the_ehlo_name_is_a_setting_with_a_sensible_default(
    run, workspace, monkeypatch, setting, fqdn, expected
):
    monkeypatch.setattr(config, "_fqdn", lambda: fqdn)
    if setting:
        monkeypatch.setenv("LISTKIT_EHLO_NAME", setting)
    with RecordingServer(True) as server:
        setup_campaign(run, workspace, server.port, ADDRS[:1])
        run("send", "t", "--yes")
    assert server.commands[0] == expected


def test_a_malformed_ehlo_name_is_named(run, workspace, monkeypatch):
    monkeypatch.setenv("LISTKIT_EHLO_NAME", "my host")
    result = run("campaigns", "check", "launch", ok=False)
    assert "LISTKIT_EHLO_NAME must be a host name" in result.output


def test_test_to_with_an_unreachable_server_is_a_one_line_error(run, workspace, free_port):
    port = free_port  # nothing listens there
    setup_campaign(run, workspace, port, ADDRS[:1])
    result = run("send", "t", "--test-to", "me@example.com", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: LISTKIT_SMTP_URL (smtp://127.0.0.1:{port}): cannot connect: "
    )
    assert result.output.count("\n") == 1


@pytest.mark.parametrize(
    "setting, url",
    [
        ("LISTKIT_SMTP_URL", "smtps://apikey:Hunter2Pass"),
        ("LISTKIT_SMTP_URL", "smtp+starttls://apikey:Hunter2Pass/"),
        ("LISTKIT_IMAP_URL", "imaps://bounces:Hunter2Pass"),
        ("LISTKIT_IMAP_URL", "imaps:bounces:Hunter2Pass@imap.example.com"),
    ],
)
def test_a_password_in_a_url_without_its_host_is_never_shown(run, monkeypatch, setting, url):
    # user:password with the host forgotten: the password parses as the port.
    monkeypatch.setenv(setting, url)
    for args in (("config",), ("config", "--json"), ("send", "launch", "--test-to", "a@b.co")):
        result = run(*args, ok=False)
        assert "Hunter2Pass" not in result.output, args
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/\r\nBcc: x@example.com",
        "https://shop.example/my list",
        "https://shop.example/\x7f",
    ],
)
def test_a_base_url_with_a_space_or_control_character_stops_the_send_before_any_message(
    run, workspace, monkeypatch, url
):
    # It is in every message's List-Unsubscribe header: found per message, it would fail
    # every recipient (or fold the link in two at the space).
    monkeypatch.setenv("LISTKIT_BASE_URL", url)
    run("lists", "create", "blog")
    run("lists", "create", "customers")
    run("subscribers", "add", "a@example.com", "--list", "blog")
    result = run("send", "launch", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: LISTKIT_BASE_URL must be a URL without spaces or control characters, not {url!r}\n"
    )
