"""Mailbox reading: the IMAP URL, .eml/mbox/Maildir files.

IMAP itself is exercised against a real Dovecot in scripts/integration_bounces.sh.
"""

import pytest

from listkit.config import load_settings, parse_imap_url
from listkit.errors import ConfigError
from listkit.inbox.mailbox import read_messages


def test_an_imaps_url_gives_host_port_mailbox_and_a_decoded_password():
    s = parse_imap_url("imaps://bounce%40shop:p%40ss%2Fw%3Ad@imap.example.com/Bounces")
    assert (s.host, s.port, s.tls, s.mailbox) == ("imap.example.com", 993, "tls", "Bounces")
    assert (s.username, s.password) == ("bounce@shop", "p@ss/w:d")
    assert s.masked() == "imaps://bounce@shop:****@imap.example.com:993/Bounces"
    assert "p@ss" not in repr(s)


def test_starttls_url_defaults_to_port_143_and_inbox():
    s = parse_imap_url("imap+starttls://u:p@127.0.0.1:1143")
    assert (s.host, s.port, s.tls, s.mailbox) == ("127.0.0.1", 1143, "starttls", "INBOX")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "imap://u:secret@host/INBOX",
            "LISTKIT_IMAP_URL must start with imaps:// or imap+starttls://, not imap:// "
            "(plain imap:// would send the password unencrypted)",
        ),
        (
            "imaps://host/INBOX",
            "LISTKIT_IMAP_URL has no user and password: imaps://user:pass@host/INBOX",
        ),
        (
            "imaps://u:se@cret@host/INBOX",
            "LISTKIT_IMAP_URL: the user and password must be 'user:pass', with @ / : in them "
            "percent-encoded (%40 %2F %3A)",
        ),
        (
            "imaps://u:sec:ret@host/INBOX",
            "LISTKIT_IMAP_URL: the user and password must be 'user:pass', with @ / : in them "
            "percent-encoded (%40 %2F %3A)",
        ),
        ("imaps://u:secret@host:99999/", "LISTKIT_IMAP_URL: port 99999 is out of range"),
        ("imaps://u:secret@ho st/", "LISTKIT_IMAP_URL has a malformed host or port: 'ho st'"),
        (
            "imaps://u:secret@host/?tls=no",
            "LISTKIT_IMAP_URL: unknown option 'tls' (known: timeout)",
        ),
    ],
)
def test_a_malformed_imap_url_is_named_and_the_password_never_shown(url, message):
    with pytest.raises(ConfigError) as e:
        parse_imap_url(url)
    assert str(e.value) == message
    assert "secret" not in str(e.value) and "cret" not in str(e.value)


def test_imap_done_is_delete_or_a_folder(tmp_path):
    def done(value):
        return load_settings(tmp_path, environ={"LISTKIT_IMAP_DONE": value}).imap_done

    assert done("") is None  # unset: the default, delete
    assert done("delete") is None
    assert done("move:Processed") == "Processed"
    with pytest.raises(ConfigError) as e:
        done("archive")
    assert str(e.value) == "LISTKIT_IMAP_DONE must be delete or move:FOLDER, not 'archive'"


def test_the_imap_settings_are_the_url_with_the_ca_file_when_one_is_set(tmp_path):
    url = "imaps://u:secret@imap.example.com/INBOX"
    settings = load_settings(tmp_path, environ={"LISTKIT_IMAP_URL": url})
    assert (settings.imap().host, settings.imap().ca_file) == ("imap.example.com", None)
    (tmp_path / "ca.pem").write_text("x")
    settings = load_settings(
        tmp_path, environ={"LISTKIT_IMAP_URL": url, "LISTKIT_IMAP_CA": "ca.pem"}
    )
    assert settings.imap().ca_file == str(tmp_path / "ca.pem")
    settings = load_settings(
        tmp_path, environ={"LISTKIT_IMAP_URL": url, "LISTKIT_IMAP_CA": "none.pem"}
    )
    with pytest.raises(ConfigError) as e:
        settings.imap()
    assert str(e.value) == f"LISTKIT_IMAP_CA: no file {tmp_path / 'none.pem'}"


def test_imap_url_is_masked_in_listkit_config(run, monkeypatch):
    monkeypatch.setenv("LISTKIT_IMAP_URL", "imaps://u:topsecret@host/INBOX")
    result = run("config")
    assert "topsecret" not in result.output
    assert "imaps://u:****@host/INBOX" in result.output


def test_a_single_eml_file_is_one_message(tmp_path):
    (tmp_path / "one.eml").write_bytes(b"Subject: hi\n\nbody\n")
    assert list(read_messages(str(tmp_path / "one.eml"))) == [("one.eml", b"Subject: hi\n\nbody\n")]


def test_an_empty_folder_is_a_clear_error(tmp_path):
    from listkit.errors import InputError

    with pytest.raises(InputError, match="no messages in this folder"):
        list(read_messages(str(tmp_path)))


def test_an_imap_url_with_unencoded_at_or_slash_in_the_password_is_still_masked(run, monkeypatch):
    monkeypatch.setenv("LISTKIT_IMAP_URL", "imaps://u:top@sec/ret@host/INBOX")
    output = run("config").output
    assert "sec" not in output and "ret@" not in output
    assert "imaps://u:****@host/INBOX" in output
    result = run("bounces", "fetch", ok=False)
    assert "sec" not in result.output and "top" not in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e308"])
def test_an_imap_timeout_that_is_not_a_sensible_number_of_seconds_is_named(run, monkeypatch, value):
    monkeypatch.setenv("LISTKIT_IMAP_URL", f"imaps://u:secretpw@127.0.0.1:1/INBOX?timeout={value}")
    result = run("bounces", "fetch", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: LISTKIT_IMAP_URL: timeout={value!r} must be a number of seconds > 0 "
        "and below 86400\n"
    )
