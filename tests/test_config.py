"""Settings: the SMTP URL (percent-encoding, no password in any output), the
environment over .env, the .env file itself, the EHLO name."""

import json
import re
from pathlib import Path

import pytest

from listkit import config
from listkit.config import SoftRule, load_settings, parse_smtp_url
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
    assert settings.smtp_ca is None
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


def test_each_default_is_the_value_read_when_nothing_is_set(tmp_path):
    settings = load_settings(tmp_path, environ={})
    assert settings.db_path == tmp_path / "listkit.db"
    assert settings.token_param == "lk"
    assert settings.track_clicks is True
    assert settings.silent_after == 5
    assert settings.imap_done is None  # delete
    assert settings.soft_bounces == SoftRule(3, 30)
    assert settings.sender is None and settings.smtp_url is None and settings.dkim_key is None


def test_settings_are_read_as_their_types(tmp_path):
    settings = load_settings(
        tmp_path,
        environ={
            "LISTKIT_SILENT_AFTER": " 12 ",
            "LISTKIT_TRACK_CLICKS": "Off",
            "LISTKIT_DKIM_KEY": "keys/dkim.pem",
            "LISTKIT_SMTP_CA": "/etc/ca.pem",
            "LISTKIT_FROM": "Ann <ann@example.com>",
            "LISTKIT_SMTP_URL": "smtps://ann:pw@mail.example.com",
            "LISTKIT_DKIM_SELECTOR": " news2611 ",
            "LISTKIT_DKIM_DOMAIN": "Mail.Example.COM.",
            "LISTKIT_SOFT_BOUNCES": "5/10",
            "LISTKIT_IMAP_URL": "imap+starttls://u:pw@imap.example.com/Bounces?timeout=5",
            "LISTKIT_IMAP_DONE": "move: Processed",
        },
    )
    assert settings.silent_after == 12
    assert settings.track_clicks is False
    assert settings.dkim_key == tmp_path / "keys" / "dkim.pem"
    assert settings.smtp_ca == Path("/etc/ca.pem")
    assert settings.sender == ("Ann", "ann@example.com")
    assert (settings.smtp_url.host, settings.smtp_url.port) == ("mail.example.com", 465)
    assert (settings.dkim_selector, settings.dkim_domain) == ("news2611", "mail.example.com")
    assert settings.soft_bounces == SoftRule(5, 10)
    imap = settings.imap_url
    assert (imap.host, imap.port, imap.tls, imap.mailbox) == (
        "imap.example.com",
        143,
        "starttls",
        "Bounces",
    )
    assert imap.timeout == 5
    assert settings.imap_done == "Processed"


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "LISTKIT_SILENT_AFTER",
            "0",
            "LISTKIT_SILENT_AFTER must be a whole number of messages, not '0'",
        ),
        ("LISTKIT_TRACK_CLICKS", "maybe", "LISTKIT_TRACK_CLICKS must be yes or no, not 'maybe'"),
        (
            "LISTKIT_SITE_URL",
            "ftp://x.example",
            "LISTKIT_SITE_URL must be an http(s) URL, not 'ftp://x.example'",
        ),
        (
            "LISTKIT_DKIM_SELECTOR",
            "news 2611",
            "LISTKIT_DKIM_SELECTOR must be letters, digits and dashes (e.g. listkit2611), "
            "not 'news 2611'",
        ),
        (
            "LISTKIT_DKIM_DOMAIN",
            "example..com",
            "LISTKIT_DKIM_DOMAIN must be a domain name like example.com, not 'example..com'",
        ),
        (
            "LISTKIT_SOFT_BOUNCES",
            "3 in 30",
            "LISTKIT_SOFT_BOUNCES must be N/DAYS such as 3/30 (3 soft bounces in 30 days), "
            "not '3 in 30'",
        ),
        (
            "LISTKIT_BOUNCE_ADDRESS",
            "bounces+x@example.com",
            "LISTKIT_BOUNCE_ADDRESS must be a plain address without '+', such as "
            "bounces@example.com, not 'bounces+x@example.com'",
        ),
        (
            "LISTKIT_DNS",
            "1.1.1.1:99999",
            "LISTKIT_DNS has a port out of range (99999), not '1.1.1.1:99999'",
        ),
        (
            "LISTKIT_DNS",
            "dns.google",
            "LISTKIT_DNS must be the IP address of a DNS server (e.g. 1.1.1.1 or "
            "127.0.0.1:5353), not 'dns.google'",
        ),
        (
            "LISTKIT_IMAP_DONE",
            "move:",
            "LISTKIT_IMAP_DONE must be delete or move:FOLDER, not 'move:'",
        ),
        (
            "LISTKIT_IMAP_URL",
            "imaps://u:secret@host/?tls=no",
            "LISTKIT_IMAP_URL: unknown option 'tls' (known: timeout)",
        ),
    ],
)
def test_a_bad_value_is_an_error_naming_the_setting_and_what_it_should_be(
    tmp_path, name, value, message
):
    settings = load_settings(tmp_path, environ={name: value})
    attr = next(s for s in config.Settings.declared.values() if s.name == name).attr
    with pytest.raises(ConfigError) as e:
        getattr(settings, attr)
    assert str(e.value) == message


def test_a_bad_secret_is_named_but_never_quoted(tmp_path):
    settings = load_settings(tmp_path, environ={"LISTKIT_SECRET": "short-secret"})
    with pytest.raises(ConfigError) as e:
        settings.secret_key()
    assert str(e.value) == "LISTKIT_SECRET is too short: use at least 16 random characters"


def test_the_settings_object_never_shows_a_secret_when_printed(tmp_path):
    secrets = {
        s.name: f"{s.attr}-value-0123456789abcdef"
        for s in config.Settings.declared.values()
        if s.secret
    }
    assert "LISTKIT_SECRET" in secrets and "LISTKIT_WEBHOOK_SECRET" in secrets
    settings = load_settings(tmp_path, environ=secrets)
    for shown in (repr(settings), str(settings), f"{settings}", repr([settings])):
        for value in secrets.values():
            assert value not in shown


AROUND_SETTINGS = re.compile(
    r"""settings\.(?:values|raw)\b|environ(?:\.get)?[\[(]\s*["']LISTKIT_|getenv\(\s*["']LISTKIT_"""
    r"""|dotenv_values|load_dotenv"""
)


def test_no_module_but_config_reads_a_setting_around_its_declaration():
    package = Path(config.__file__).parent
    readers = [
        f"{path.relative_to(package.parent)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "config.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if AROUND_SETTINGS.search(line)
    ]
    assert not readers, "read settings as settings.<attribute>:\n" + "\n".join(readers)
