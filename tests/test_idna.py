"""One IDNA encoding (UTS 46) for settings, imports and sending: straße.de is xn--strae-oqa.de.

IDNA 2003 (Python's ``idna`` codec) maps ß to ss: ``strasse.de``, another
domain with another owner.
"""

import json

import pytest

from listkit import config
from listkit.config import load_settings
from tests.test_send import setup_campaign
from tests.test_smtp import RecordingServer

A_LABEL = "xn--strae-oqa.de"


def test_the_ehlo_name_taken_from_the_sender_domain_is_its_uts46_a_label(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "_fqdn", lambda: "localhost")
    settings = load_settings(tmp_path, {"LISTKIT_FROM": "Anna <anna@straße.de>"})
    assert settings.ehlo_hostname() == A_LABEL


def test_the_sender_address_setting_has_its_domain_in_a_labels(tmp_path):
    settings = load_settings(tmp_path, {"LISTKIT_FROM": "Anna <anna@Straße.de>"})
    assert settings.sender_address() == ("Anna", f"anna@{A_LABEL}")


def test_the_bounce_address_setting_has_its_domain_in_a_labels(tmp_path):
    settings = load_settings(tmp_path, environ={"LISTKIT_BOUNCE_ADDRESS": "bounces@Straße.de"})
    assert settings.bounce_address == f"bounces@{A_LABEL}"


def test_a_sender_domain_that_is_no_valid_idn_is_a_clear_setting_error(tmp_path):
    settings = load_settings(tmp_path, {"LISTKIT_FROM": "Anna <anna@-ß-.de>"})
    with pytest.raises(config.ConfigError, match="LISTKIT_FROM"):
        settings.sender_address()


def test_a_campaign_from_and_to_straße_de_goes_out_in_a_labels(
    run, workspace, monkeypatch, tmp_path
):
    monkeypatch.setattr(config, "_fqdn", lambda: "localhost")
    monkeypatch.setenv("LISTKIT_FROM", "Anna <anna@straße.de>")
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@straße.de")
    with RecordingServer(True) as server:
        setup_campaign(run, workspace, server.port, [])
        f = tmp_path / "readers.csv"
        f.write_text("email\nleser@straße.de\n", encoding="utf-8")
        out = json.loads(run("subscribers", "import", str(f), "--list", "blog", "--json").output)
        assert out["imported"] == 1
        run("send", "t", "--yes")
    commands = [c.decode() for c in server.commands]
    assert commands[0] == f"EHLO {A_LABEL}"
    mail_from = next(c for c in commands if c.startswith("MAIL FROM:"))
    assert mail_from.startswith("MAIL FROM:<bounces+") and f"@{A_LABEL}>" in mail_from
    assert any(c.startswith(f"RCPT TO:<leser@{A_LABEL}>") for c in commands)
    (data,) = server.data
    headers = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert f"From: Anna <anna@{A_LABEL}>" in headers
    assert f".lk@{A_LABEL}>" in headers  # the Message-ID
