"""DKIM signing, checked by an independent verifier (dkimpy) against the published key."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import dkim as dkimpy
import pytest

import listkit.send.render as render
from listkit.config import load_settings
from listkit.mail import dkim
from listkit.mail.compose import Composer
from listkit.mail.offers import load_offer
from listkit.send.outbox import Claimed
from listkit.send.sender import send_campaign
from listkit.send.smtp import wire_form
from listkit.workspace import Workspace
from tests.test_send import setup_campaign

SUBSCRIBER = {"id": 1, "email": "ann@example.org", "name": "Ann", "fields": {}}


def keygen(run, *args: str) -> dict:
    return json.loads(run("dkim", "keygen", "--json", *args).output)


@pytest.fixture
def signing(run, workspace: Path) -> dict:
    """The workspace with a new key in .env; the DNS that publishes it."""
    new = keygen(run, "--selector", "sel1")
    with (workspace / ".env").open("a") as f:
        f.write(f"LISTKIT_DKIM_KEY={Path(new['key']).name}\nLISTKIT_DKIM_SELECTOR=sel1\n")
    return {f"{new['record_name']}.".encode(): new["record_value"].encode()}


def verifies(message: bytes, dns: dict) -> bool:
    return dkimpy.verify(message, dnsfunc=lambda name, timeout=5: dns.get(name))


def composed(workspace: Path) -> bytes:
    settings = load_settings(workspace)
    offer = load_offer(workspace / "offers", "launch")
    composer = Composer(offer, settings, campaign="launch", offers_dir=workspace / "offers")
    return composer.compose(
        subscriber=SUBSCRIBER, list_slug="blog", list_title="Blog", token="tok123tok123tok1"
    ).data


def test_a_signed_message_verifies_against_the_published_key(workspace, signing):
    message = composed(workspace)
    assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert b"d=example.com; s=sel1;" in message
    assert verifies(message, signing)


def test_the_signature_covers_from_subject_and_the_one_click_unsubscribe_headers(
    workspace, signing
):
    message = composed(workspace)
    sig = dkimpy.util.parse_tag_value(message.split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1])
    h = re.sub(rb"\s", b"", sig[b"h"]).split(b":")
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"list-id"):
        assert name in h
    assert b"list-unsubscribe" in h and b"list-unsubscribe-post" in h


def test_a_header_changed_after_signing_fails_verification(workspace, signing):
    message = composed(workspace)
    assert verifies(message, signing)
    changed = message.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <http://", 1)
    assert changed != message
    assert not verifies(changed, signing)


def test_a_body_byte_changed_after_signing_fails_verification(workspace, signing):
    message = composed(workspace)
    head, body = message.split(b"\r\n\r\n", 1)
    i = body.index(b"Ann")
    changed = head + b"\r\n\r\n" + body[:i] + b"Bnn" + body[i + 3 :]
    assert not verifies(changed, signing)


def test_a_second_from_added_on_the_way_fails_verification(workspace, signing):
    message = composed(workspace)
    sig_end = message.index(b"\r\nFrom:") + 2
    forged = message[:sig_end] + b"From: Mallory <m@evil.example>\r\n" + message[sig_end:]
    assert not verifies(forged, signing)


def test_a_relay_refolding_headers_and_adding_received_keeps_the_signature(workspace, signing):
    message = composed(workspace)
    refolded = b"Received: from x by y; Mon, 30 Nov 2026 02:00:00 +0000\r\n" + message.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"List-Unsubscribe-Post:   List-Unsubscribe=One-Click",
    )
    assert refolded != message
    assert verifies(refolded, signing)


def test_the_key_of_another_selector_does_not_verify(run, workspace, signing):
    other = keygen(run, "--selector", "sel2")
    wrong = {next(iter(signing)): other["record_value"].encode()}
    assert not verifies(composed(workspace), wrong)


def test_relaxed_canonicalization_follows_rfc_6376_examples():
    # RFC 6376 section 3.4.5.
    assert dkim.relaxed_header(b"A", b" X\r\n") == b"a:X\r\n"
    assert dkim.relaxed_header(b"B ", b" Y\t\r\n\tZ  \r\n") == b"b:Y Z\r\n"
    assert dkim.relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert dkim.relaxed_body(b"") == b""
    assert dkim.relaxed_body(b"\r\n\r\n") == b""


BODIES = [
    b"",
    b"\r\n\r\n",
    b"plain\r\n",
    b"a  b\t\tc \t \r\n",
    b"\t leading\r\n \r\n\t\r\nlast\r\n\r\n \r\n",
    b"x\r\n  \r\n",
    b"=3D qp=20\r\n<p>    indented</p>\r\n\r\n",
]
HEADERS = [
    (b"Subject", b" hello"),
    (b"Subject ", b" a \r\n\tb  "),
    (b"List-Unsubscribe", b"\r\n <https://example.com/u/x>"),
    (b"X-Tabs", b"\t\ta\t\tb\t"),
]


@pytest.mark.parametrize("body", BODIES)
def test_relaxed_body_canonicalization_matches_dkimpy(body):
    from dkim.canonicalization import Relaxed

    assert dkim.relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_a_message_without_a_final_line_end_is_signed_as_smtp_will_carry_it(workspace, signing):
    from listkit.send.smtp import wire_form

    signer = dkim.signer_for(load_settings(workspace), "you@example.com")
    message = b"From: <you@example.com>\r\nSubject: x\r\n\r\nlast line   "
    signed = signer.sign(message)
    carried = wire_form(signed)[: -len(b".\r\n")]
    assert verifies(carried, signing)


@pytest.mark.parametrize(("name", "value"), HEADERS)
def test_relaxed_header_canonicalization_matches_dkimpy(name, value):
    from dkim.canonicalization import Relaxed

    [(cname, cvalue)] = Relaxed.canonicalize_headers([(name, value)])
    assert dkim.relaxed_header(name, value) == cname + b":" + cvalue


def test_readers_with_different_names_tokens_and_lists_each_get_a_signature_that_verifies(
    workspace, signing
):
    settings = load_settings(workspace)
    offer = load_offer(workspace / "offers", "launch")
    composer = Composer(offer, settings, campaign="launch", offers_dir=workspace / "offers")
    readers = [
        ("Ann", "ann@example.org", "blog", "aaaaaaaaaaaaaaa1"),
        ("Zoë Müller", "zoe@example.org", "blog", "aaaaaaaaaaaaaaa2"),
        (None, "nameless@example.org", "news", "aaaaaaaaaaaaaaa3"),
        ("Bob  \t Two", "bob@example.org", "news", "aaaaaaaaaaaaaaa4"),
        ("A" * 90, "long@example.org", "blog", "aaaaaaaaaaaaaaa5"),
    ]
    messages = [
        composer.compose(
            subscriber={"id": i, "email": email, "name": name, "fields": {}},
            list_slug=slug,
            list_title=slug.title(),
            token=token,
        ).data
        for i, (name, email, slug, token) in enumerate(readers, 1)
    ]
    for message, (_name, email, _slug, token) in zip(messages, readers, strict=True):
        assert verifies(message, signing)
        assert email.encode() in message and token.encode() in message
    assert len({m.split(b"\r\n\r\n")[0] for m in messages}) == len(readers)


# Messages one signer signs in turn: each header line changes in one of them
# (To, Subject folded or not, Date, an added header, another order), and the body.
SIGNED_IN_TURN = [
    b"From: <you@example.com>\r\nTo: Ann <ann@example.org>\r\nSubject: Hi Ann\r\n"
    b"Date: Fri, 04 Dec 2026 18:00:00 +0000\r\n\r\nHello Ann\r\n",
    b"From: <you@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: Hi Bob\r\n"
    b"Date: Fri, 04 Dec 2026 18:00:00 +0000\r\n\r\nHello Bob\r\n",
    b"From: <you@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: Hi\r\n  Bob\r\n"
    b"Date: Fri, 04 Dec 2026 18:00:01 +0000\r\n\r\nHello Bob\r\n",
    b"From: <you@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject:Hi \t Bob \r\n"
    b"Date: Fri, 04 Dec 2026 18:00:01 +0000\r\nCc: <c@example.org>\r\n\r\nHello Bob\r\n",
    b"To: Bob <bob@example.org>\r\nFrom: <you@example.com>\r\nSubject: Hi Bob\r\n"
    b"Date: Fri, 04 Dec 2026 18:00:01 +0000\r\n\r\nHello  Bob\r\n",
]


def test_a_signer_that_has_signed_other_messages_signs_each_as_a_new_signer_would(
    workspace, signing, monkeypatch
):
    # Few lines kept, so that most of the later ones are not.
    monkeypatch.setattr(dkim, "FIELDS_KEPT", 6)
    signer = dkim.signer_for(load_settings(workspace), "you@example.com")
    for message in SIGNED_IN_TURN * 2:
        # RSA PKCS#1 v1.5 signatures are deterministic: the same signed bytes,
        # the same signature.
        fresh = dkim.Signer(signer.key, signer.domain, signer.selector, signer.key_path)
        signed = signer.sign(message, now=1796400000)
        assert signed == fresh.sign(message, now=1796400000)
        assert verifies(signed, signing)
    assert len(signer._fields) == 6


def test_a_header_changed_after_signing_fails_even_when_it_was_signed_before(workspace, signing):
    signer = dkim.signer_for(load_settings(workspace), "you@example.com")
    ann, bob = SIGNED_IN_TURN[0], SIGNED_IN_TURN[1]
    signer.sign(bob)
    signed = signer.sign(ann)
    # Ann's message given Bob's To line, which the signer has canonicalized before.
    swapped = signed.replace(b"To: Ann <ann@example.org>", b"To: Bob <bob@example.org>")
    assert swapped != signed
    assert verifies(signed, signing)
    assert not verifies(swapped, signing)


def test_keygen_writes_a_private_key_readable_by_the_owner_only(run, workspace):
    result = run("dkim", "keygen", "--selector", "news")
    path = workspace / "dkim-news.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "news._domainkey.example.com" in result.output
    assert "v=DKIM1; k=rsa; p=MII" in result.output
    assert "LISTKIT_DKIM_KEY=dkim-news.pem" in result.output
    assert "LISTKIT_DKIM_SELECTOR=news" in result.output
    assert "PRIVATE KEY" not in result.output


def test_keygen_never_overwrites_a_key(run, workspace):
    run("dkim", "keygen", "--selector", "news")
    before = (workspace / "dkim-news.pem").read_bytes()
    result = run("dkim", "keygen", "--selector", "news", ok=False)
    assert result.exit_code == 1
    assert "keygen never overwrites a key" in result.output
    assert (workspace / "dkim-news.pem").read_bytes() == before


def test_config_says_signing_is_on_and_for_which_domain_never_the_key(run, workspace, signing):
    result = run("config")
    assert (
        "DKIM signing: on for example.com (selector sel1, RSA 2048, "
        "key published at sel1._domainkey.example.com)"
    ) in result.output
    key_body = (workspace / "dkim-sel1.pem").read_text().splitlines()[1]
    assert key_body not in result.output
    data = json.loads(run("config", "--json").output)
    assert data["dkim"]["signing"] is True and data["dkim"]["domain"] == "example.com"


def test_config_says_signing_is_off_without_a_key(run):
    assert "DKIM signing: off" in run("config").output


def test_the_dkim_domain_setting_overrides_the_from_domain(workspace, signing, monkeypatch):
    monkeypatch.setenv("LISTKIT_DKIM_DOMAIN", "mail.example.com")
    message = composed(workspace)
    assert b"d=mail.example.com;" in message
    dns = {b"sel1._domainkey.mail.example.com.": next(iter(signing.values()))}
    assert verifies(message, dns)


def test_a_missing_key_file_is_an_error_naming_the_setting(run, workspace, monkeypatch):
    monkeypatch.setenv("LISTKIT_DKIM_KEY", "nope.pem")
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    result = run("offers", "preview", "launch", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: LISTKIT_DKIM_KEY: no file {workspace / 'nope.pem'}: "
        "create a key with `listkit dkim keygen`\n"
    )


def test_a_file_that_is_not_a_private_key_is_an_error_naming_the_setting(
    run, workspace, monkeypatch
):
    bad = workspace / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n")
    bad.chmod(0o600)
    monkeypatch.setenv("LISTKIT_DKIM_KEY", str(bad))
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    result = run("offers", "preview", "launch", ok=False)
    assert result.output == (
        f"Error: LISTKIT_DKIM_KEY: {bad} is not a PEM private key: "
        "create one with `listkit dkim keygen`\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_an_error_naming_the_setting(run, workspace, signing):
    (workspace / "dkim-sel1.pem").chmod(0o000)
    result = run("offers", "preview", "launch", ok=False)
    assert result.output.startswith("Error: LISTKIT_DKIM_KEY: cannot read")


def test_a_key_file_others_can_read_is_refused(run, workspace, signing):
    path = workspace / "dkim-sel1.pem"
    path.chmod(0o644)
    result = run("offers", "preview", "launch", ok=False)
    assert result.output == (
        f"Error: LISTKIT_DKIM_KEY: {path} can be read or changed by others (mode 644): "
        f"run `chmod 600 {path}`, and make a new key if others may have read it\n"
    )
    assert "DKIM signing: not possible: LISTKIT_DKIM_KEY" in run("config").output


def test_a_key_without_a_selector_is_an_error_naming_the_selector(run, workspace, monkeypatch):
    new = keygen(run, "--selector", "sel1")
    monkeypatch.setenv("LISTKIT_DKIM_KEY", new["key"])
    result = run("offers", "preview", "launch", ok=False)
    assert result.output.startswith("Error: LISTKIT_DKIM_SELECTOR is not set:")


def test_a_selector_without_a_key_is_an_error_rather_than_unsigned_mail(run, monkeypatch):
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    result = run("offers", "preview", "launch", ok=False)
    assert result.output.startswith(
        "Error: LISTKIT_DKIM_SELECTOR is set but LISTKIT_DKIM_KEY is not"
    )


def _campaign(run, workspace: Path, port: int, addresses: list[str]) -> None:
    run("lists", "create", "blog")
    for address in addresses:
        run("subscribers", "add", address, "--list", "blog")
    (workspace / "campaigns" / "t.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nconcurrency = 2\n'
    )
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    )


def test_every_sent_message_arrives_signed_and_verifies(run, workspace, signing, server):
    controller, handler = server
    addresses = [f"r{i}@example.org" for i in range(5)]
    _campaign(run, workspace, controller.port, addresses)
    run("send", "t", "--yes")
    assert sorted(rcpt for _mid, rcpt, _data in handler.messages) == addresses
    for _mid, _rcpt, data in handler.messages:
        assert verifies(data, signing)


def test_messages_rendered_in_the_render_process_are_signed_there(
    run, workspace, signing, server, monkeypatch
):
    import listkit.send.render

    monkeypatch.setattr(listkit.send.render, "POOL_THRESHOLD", 2)
    monkeypatch.setattr(listkit.send.render.os, "cpu_count", lambda: 2)
    controller, handler = server
    addresses = [f"p{i}@example.org" for i in range(3)]
    _campaign(run, workspace, controller.port, addresses)
    spawned = []
    real = listkit.send.render.ProcessPoolExecutor

    def pool(*args, **kwargs):
        spawned.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(listkit.send.render, "ProcessPoolExecutor", pool)
    run("send", "t", "--yes")
    assert spawned, "the render process was not used"
    assert len(handler.messages) == 3
    for _mid, _rcpt, data in handler.messages:
        assert verifies(data, signing)


def test_two_render_processes_sign_every_message_and_hand_them_back_in_claim_order(
    run, workspace, signing, server, monkeypatch
):
    monkeypatch.setattr(render, "POOL_THRESHOLD", 2)
    controller, handler = server
    addresses = [f"o{i:02d}@example.org" for i in range(23)]
    # One connection: the server receives the messages in the order they are queued.
    setup_campaign(run, workspace, controller.port, addresses)
    campaign = workspace / "campaigns" / "t.toml"
    campaign.write_text(campaign.read_text().replace("concurrency = 2", "concurrency = 1"))
    with (workspace / ".env").open("a") as f:
        f.write("LISTKIT_RENDER_WORKERS=2\n")
    started = []
    real = render.ProcessPoolExecutor

    def pool(*args, **kwargs):
        started.append(kwargs["max_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "ProcessPoolExecutor", pool)
    ws = Workspace(workspace)
    try:
        # Batches of 3: both processes render, and several batches are under way at once.
        summary = send_campaign(ws, "t", batch=3)
        claim_order = [
            email
            for (email,) in ws.db.execute(
                """SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                   ORDER BY d.id"""
            )
        ]
    finally:
        ws.close()
    assert started == [2]
    assert summary.this_run == {"sent": 23}
    assert [rcpt for _mid, rcpt, _data in handler.messages] == claim_order
    for _mid, _rcpt, data in handler.messages:
        assert verifies(data, signing)


def test_a_batch_is_signed_in_claim_order_and_a_row_that_cannot_be_built_fails_alone(
    workspace, signing
):
    settings = load_settings(workspace)
    offer = load_offer(workspace / "offers", "launch")
    composer = Composer(offer, settings, campaign="launch", offers_dir=workspace / "offers")
    names = ["Ann", "=?utf-8?q?Eve=0D=0ABcc:_x?=", "Bob"]  # the second hides a CRLF
    rows = [
        Claimed(
            i,
            i,
            f"r{i}@example.org",
            f"r{i}@example.org",
            name,
            None,
            None,
            "{}",
            "blog",
            "Blog",
            None,  # no token from before m020: the token is derived from the id
            0,
            settings.secret_key(),
        )
        for i, name in enumerate(names)
    ]
    (ann, none), (nothing, why), (bob, none_too) = render.compose_rows(composer, rows)
    assert none is None and none_too is None and nothing is None
    assert "contains a control character" in why
    for data, row in ((ann, rows[0]), (bob, rows[2])):
        message = data[: -len(b".\r\n")]
        assert f"To: {row.name} <{row.email}>".encode() in message
        assert verifies(message, signing)
        assert data == wire_form(message)


def test_checking_a_campaign_renders_every_message_without_signing_any(
    run, workspace, signing, monkeypatch
):
    signed = []
    real = dkim.Signer.sign
    monkeypatch.setattr(
        dkim.Signer, "sign", lambda self, m, **kw: signed.append(1) or real(self, m)
    )
    _campaign(run, workspace, 25, [f"c{i}@example.org" for i in range(3)])
    result = run("campaigns", "check", "t")
    assert "3" in result.output
    assert signed == []
    run("offers", "preview", "launch")
    assert signed == [1]


def test_keygen_for_a_workspace_that_does_not_exist_says_so(tmp_path):
    from click.testing import CliRunner

    from listkit.cli import cli

    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(
        cli, ["-w", str(missing), "dkim", "keygen", "--domain", "example.com"]
    )
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no workspace at {missing}: run `listkit init {missing}` first\n"
    )


def test_a_message_with_bare_line_feeds_is_signed_as_smtp_will_carry_it(workspace, signing):
    from listkit.send.smtp import wire_form

    signer = dkim.signer_for(load_settings(workspace), "you@example.com")
    signed = signer.sign(b"From: <you@example.com>\nSubject: x\n\nline one\nline two\n")
    assert verifies(wire_form(signed)[: -len(b".\r\n")], signing)


def test_record_prints_the_published_value_of_the_configured_key(run, workspace, signing):
    out = run("dkim", "record").output.splitlines()
    [value] = signing.values()
    assert out[0] == "name:  sel1._domainkey.example.com"
    assert out[1] == f"value: {value.decode()}"
    assert out[2].startswith('sel1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=')


def test_record_without_a_key_says_how_to_make_one(run):
    result = run("dkim", "record", ok=False)
    assert result.output == (
        "Error: LISTKIT_DKIM_KEY is not set: make a key with `listkit dkim keygen` first\n"
    )


def test_a_key_setting_naming_a_folder_is_an_error_naming_the_setting(run, workspace, monkeypatch):
    monkeypatch.setenv("LISTKIT_DKIM_KEY", "offers")
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    result = run("offers", "preview", "launch", ok=False)
    assert result.output == f"Error: LISTKIT_DKIM_KEY: {workspace / 'offers'} is not a file\n"


def test_a_passphrase_protected_key_is_an_error_saying_how_to_unlock_it(
    run, workspace, monkeypatch
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = workspace / "locked.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2hunter2"),
        )
    )
    path.chmod(0o600)
    monkeypatch.setenv("LISTKIT_DKIM_KEY", "locked.pem")
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    result = run("offers", "preview", "launch", ok=False)
    assert result.output.startswith(
        f"Error: LISTKIT_DKIM_KEY: {path} is encrypted with a passphrase: "
        "listkit needs an unencrypted key"
    )
