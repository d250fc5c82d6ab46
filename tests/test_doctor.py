"""`listkit doctor` against a DNS server on loopback and a local HTTPS service."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import uvicorn

from listkit.mail import dkim
from listkit.mail.doctor import DNS, SPF
from tests.dns_server import DNSServer, txt

RELAY = "203.0.113.7"


class Health(BaseHTTPRequestHandler):
    methods: list[tuple[str, str]]

    def _answer(self) -> None:
        self.server.methods.append((self.command, self.path))
        if self.command == "GET" and self.path == "/listkit/healthz":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        else:
            self.send_response(404 if self.command == "GET" else 405)
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def https_service(tmp_path_factory: pytest.TempPathFactory):
    """One local HTTPS service for the module, answering /listkit/healthz."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.methods = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.ca_file = tmp_path_factory.mktemp("https") / "ca.pem"
    ca.cert_pem.write_to_path(str(server.ca_file))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def https(https_service, monkeypatch):
    """The HTTPS service, trusted through SSL_CERT_FILE, its record of requests empty."""
    https_service.methods.clear()
    monkeypatch.setenv("SSL_CERT_FILE", str(https_service.ca_file))
    return https_service


@pytest.fixture
def site(run, workspace: Path, https, monkeypatch) -> dict:
    """A workspace with a DKIM key and its unsubscribe service; the records that fit."""
    new = json.loads(run("dkim", "keygen", "--json", "--selector", "sel1").output)
    monkeypatch.setenv("LISTKIT_DKIM_KEY", new["key"])
    monkeypatch.setenv("LISTKIT_DKIM_SELECTOR", "sel1")
    monkeypatch.setenv("LISTKIT_BASE_URL", f"https://127.0.0.1:{https.server_port}/listkit")
    monkeypatch.setenv("LISTKIT_SMTP_URL", "smtp://mail.relay.test:587")
    return {
        "example.com.": [txt("v=spf1 include:_spf.relay.test ~all"), ("MX", "10 mx.example.com.")],
        "_spf.relay.test.": [txt("v=spf1 a:mail.relay.test mx:relay.test -all")],
        "mail.relay.test.": [("A", RELAY)],
        "relay.test.": [("MX", "5 in.relay.test.")],
        "in.relay.test.": [("A", "198.51.100.9")],
        "sel1._domainkey.example.com.": [txt(new["record_value"])],
        "_dmarc.example.com.": [txt("v=DMARC1; p=quarantine; rua=mailto:d@example.com")],
    }


def doctor(run, zones: dict, *args: str):
    with DNSServer(zones) as server:
        return run("doctor", "--dns", server.address, "--timeout", "2", *args, ok=False)


def lines(result) -> list[str]:
    return [line.strip() for line in result.output.splitlines()]


def test_good_records_pass_every_check(run, site, https):
    result = doctor(run, site)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert out[0].startswith("Checking example.com, relay mail.relay.test (DNS: 127.0.0.1:")
    assert (
        "ok    SPF          example.com allows your relay mail.relay.test: "
        "203.0.113.7 (by include:_spf.relay.test)"
    ) in out
    assert "ok    DKIM         sel1._domainkey.example.com publishes this workspace's key " in (
        result.output
    )
    assert (
        "ok    DMARC        _dmarc.example.com: p=quarantine; DKIM d=example.com aligned "
        "(relaxed) with From example.com; SPF envelope domain example.com aligned (relaxed)"
    ) in out
    assert any(line.startswith("ok    Unsubscribe  https://127.0.0.1:") for line in out)
    assert out[-1] == "All checks passed."
    assert https.methods == [("GET", "/listkit/healthz")]


def test_missing_spf_and_dmarc_fail_and_say_what_to_publish_where(run, site):
    site["example.com."] = [("MX", "10 mx.example.com.")]
    del site["_dmarc.example.com."]
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert (
        "FAIL  SPF          example.com has no SPF record: receivers cannot tell which "
        "servers may send as it"
    ) in out
    assert (
        "-> Publish a TXT record at example.com naming the servers that send your mail, "
        "e.g. `v=spf1 ip4:203.0.113.7 ~all` (your SMTP provider's docs give the include:... "
        "to use instead of an address)."
    ) in out
    assert (
        "FAIL  DMARC        example.com has no DMARC record: Gmail and Yahoo require one "
        "from bulk senders"
    ) in out
    assert (
        "-> Publish a TXT record at _dmarc.example.com with the value "
        "`v=DMARC1; p=none; rua=mailto:dmarc@example.com` to start (reports, no enforcement); "
        "move to p=quarantine once the reports show only your mail."
    ) in out
    assert out[-1] == (
        "2 of 4 checks failed (SPF, DMARC): mailbox providers may send your mail to spam "
        "or refuse it until they pass."
    )


def test_spf_that_does_not_allow_the_relay_fails_with_the_record_to_publish(run, site):
    site["example.com."] = [txt("v=spf1 ip4:198.51.100.0/24 mx -all")]
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert (
        "FAIL  SPF          the SPF record of example.com does not allow your relay "
        "mail.relay.test: 203.0.113.7 (fail)"
    ) in out
    assert (
        "-> Change the TXT record at example.com to "
        "`v=spf1 ip4:203.0.113.7 ip4:198.51.100.0/24 mx -all` (or add the include:... "
        "your SMTP provider documents)."
    ) in out
    assert (
        "-> If your relay is a provider's submission server, it may send from other addresses "
        "than its own: check one of those with --relay-ip."
    ) in out


def test_spf_with_more_than_ten_lookups_is_reported_broken(run, site):
    site["example.com."] = [txt("v=spf1 include:i0.test -all")]
    for i in range(11):
        site[f"i{i}.test."] = [txt(f"v=spf1 a include:i{i + 1}.test -all"), ("A", "192.0.2.1")]
    site["i11.test."] = [txt("v=spf1 -all")]
    result = doctor(run, site)
    assert result.exit_code == 1
    assert "FAIL  SPF          the SPF record of example.com cannot be evaluated (permerror)" in (
        result.output
    )
    assert "more than 10 DNS lookups" in result.output


def test_a_published_key_that_is_not_the_workspace_key_fails(run, site, workspace):
    other = json.loads(run("dkim", "keygen", "--json", "--selector", "old").output)
    site["sel1._domainkey.example.com."] = [txt(other["record_value"])]
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert (
        "FAIL  DKIM         the key published at sel1._domainkey.example.com does not match "
        "this workspace's key (dkim-sel1.pem): receivers will reject every signature"
    ) in out
    ours = dkim.txt_value(dkim._load_private_key(workspace / "dkim-sel1.pem"))
    assert (
        f"-> Publish a TXT record at sel1._domainkey.example.com with the value `{ours}`."
    ) in out


def test_a_missing_dkim_record_says_exactly_what_to_publish(run, site, workspace):
    del site["sel1._domainkey.example.com."]
    result = doctor(run, site)
    assert result.exit_code == 1
    assert "FAIL  DKIM         no DKIM key is published at sel1._domainkey.example.com" in (
        lines(result)
    )
    ours = dkim.txt_value(dkim._load_private_key(workspace / "dkim-sel1.pem"))
    assert ours in result.output


def test_unsigned_mail_fails_the_dkim_check_with_the_way_to_start(run, site, monkeypatch):
    monkeypatch.delenv("LISTKIT_DKIM_KEY")
    monkeypatch.delenv("LISTKIT_DKIM_SELECTOR")
    result = doctor(run, site)
    out = lines(result)
    assert (
        "FAIL  DKIM         messages are not signed: Gmail, Yahoo and Microsoft want DKIM "
        "from bulk senders"
    ) in out
    assert "DMARC        _dmarc.example.com: p=quarantine; no DKIM signature to align" in (
        result.output
    )


def test_a_dkim_domain_outside_the_from_domain_is_not_aligned(run, site, monkeypatch):
    monkeypatch.setenv("LISTKIT_DKIM_DOMAIN", "relay.test")
    site["sel1._domainkey.relay.test."] = site.pop("sel1._domainkey.example.com.")
    result = doctor(run, site)
    out = lines(result)
    assert (
        "WARN  DMARC        _dmarc.example.com: p=quarantine; DKIM d=relay.test NOT aligned "
        "(relaxed) with From example.com; SPF envelope domain example.com aligned (relaxed)"
    ) in out
    assert any("set LISTKIT_DKIM_DOMAIN=example.com" in line for line in out)


def test_a_missing_unsubscribe_service_is_named_and_nothing_is_posted(
    run, site, https, monkeypatch, free_port
):
    monkeypatch.setenv("LISTKIT_BASE_URL", f"https://127.0.0.1:{free_port}/listkit")
    result = doctor(run, site)
    assert result.exit_code == 1
    assert (
        "/listkit/healthz: nothing answers there (connection refused): the service is not running"
    ) in result.output
    assert "Start `listkit serve` where LISTKIT_BASE_URL points" in result.output
    assert https.methods == []


def test_a_site_without_the_service_answers_404_and_is_named(run, site, https, monkeypatch):
    monkeypatch.setenv("LISTKIT_BASE_URL", f"https://127.0.0.1:{https.server_port}/other")
    result = doctor(run, site)
    assert "answers 404: something answers at LISTKIT_BASE_URL, but not `listkit serve`" in (
        result.output
    )
    assert all(method == "GET" for method, _path in https.methods)


def test_a_plain_http_base_url_fails_the_unsubscribe_check(run, site, https, monkeypatch):
    monkeypatch.setenv("LISTKIT_BASE_URL", "http://example.com/listkit")
    result = doctor(run, site)
    assert (
        "FAIL  Unsubscribe  LISTKIT_BASE_URL is http://example.com/listkit: one-click "
        "unsubscribe (RFC 8058) needs HTTPS"
    ) in lines(result)
    assert https.methods == []


def test_a_relay_on_loopback_asks_for_its_public_address(run, site, monkeypatch):
    monkeypatch.setenv("LISTKIT_SMTP_URL", "smtp://127.0.0.1:25")
    result = doctor(run, site)
    assert "WARN  SPF" in result.output
    assert "the relay 127.0.0.1 has no public address" in result.output
    assert "listkit doctor --relay-ip ADDRESS" in result.output
    with DNSServer(site) as server:
        again = run("doctor", "--dns", server.address, "--relay-ip", RELAY, ok=False)
    assert "ok    SPF          example.com allows your relay 203.0.113.7" in again.output


def test_a_dns_server_that_does_not_answer_is_a_failed_check_not_a_traceback(run, site):
    with DNSServer(site) as server:
        address = server.address
    result = run("doctor", "--dns", address, "--timeout", "0.05", ok=False)
    assert result.exit_code == 1
    assert "FAIL  SPF          DNS did not answer:" in result.output
    assert "Traceback" not in result.output


def test_a_malformed_dns_option_names_it(run, site):
    result = run("doctor", "--dns", "dns.google", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: --dns must be the IP address of a DNS server (e.g. 1.1.1.1 or "
        "127.0.0.1:5353), not 'dns.google'\n"
    )


def test_the_dns_setting_is_used_when_no_option_is_given(run, site, monkeypatch):
    with DNSServer(site) as server:
        monkeypatch.setenv("LISTKIT_DNS", server.address)
        result = run("doctor", "--json", ok=False)
    data = json.loads(result.output)
    assert data["dns"] == server.address
    assert [c["status"] for c in data["checks"]] == ["ok", "ok", "ok", "ok"]


def test_spf_mechanisms_a_mx_ip6_and_redirect_match_as_rfc_7208_says():
    zones = {
        "d.test.": [txt("v=spf1 redirect=r.test")],
        "r.test.": [
            txt("v=spf1 ip6:2001:db8::/32 a/24 mx ~all"),
            ("A", "192.0.2.10"),
            ("MX", "1 m.r.test."),
        ],
        "m.r.test.": [("AAAA", "2001:db9::1")],
    }
    with DNSServer(zones) as server:
        host, port = server.address.split(":")
        resolver = DNS((host, int(port)))

        def result(ip: str) -> str:
            return SPF(resolver, ipaddress.ip_address(ip), "a@d.test").check("d.test").result

        assert result("2001:db8::5") == "pass"  # ip6
        assert result("192.0.2.99") == "pass"  # a/24
        assert result("2001:db9::1") == "pass"  # mx
        assert result("198.51.100.1") == "softfail"  # ~all


def test_a_key_file_others_can_read_fails_the_dkim_check_and_the_others_still_run(
    run, site, workspace
):
    (workspace / "dkim-sel1.pem").chmod(0o644)
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert any(
        line.startswith("FAIL  DKIM         LISTKIT_DKIM_KEY:") and "chmod 600" in line
        for line in out
    )
    assert any(line.startswith("ok    SPF") for line in out)
    assert any(line.startswith("ok    Unsubscribe") for line in out)


def test_dns_servers_are_read_with_or_without_a_port_and_in_brackets_for_ipv6(tmp_path):
    from listkit.config import load_settings

    def parse_server(value):
        return load_settings(tmp_path, environ={"LISTKIT_DNS": value}).dns

    assert parse_server("1.1.1.1") == ("1.1.1.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:5353") == ("::1", 5353)
    assert parse_server("::1") == ("::1", 53)


def test_dmarc_falls_back_to_the_parent_domain_and_its_subdomain_policy(run, site, monkeypatch):
    monkeypatch.setenv("LISTKIT_FROM", "News <news@mail.example.com>")
    monkeypatch.setenv("LISTKIT_DKIM_DOMAIN", "example.com")
    site["mail.example.com."] = [txt("v=spf1 a:mail.relay.test -all")]
    site["_dmarc.example.com."] = [txt("v=DMARC1; p=reject; sp=none")]
    result = doctor(run, site)
    assert (
        "ok    DMARC        _dmarc.example.com: p=none (subdomain policy); DKIM d=example.com "
        "aligned (relaxed) with From mail.example.com; SPF envelope domain mail.example.com "
        "aligned (relaxed) (p=none only monitors: receivers act on nothing)"
    ) in lines(result)


class StartedServer(uvicorn.Server):
    """A uvicorn server that says when it serves, instead of being polled."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.ready.set()


def test_the_unsubscribe_check_passes_against_the_real_listkit_serve_over_https(
    run, site, workspace, tmp_path, monkeypatch
):
    import socket

    from listkit.web.app import create_app
    from listkit.workspace import Workspace

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    ws = Workspace(workspace)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(ws),
        ssl_certfile=str(tmp_path / "cert.pem"),
        ssl_keyfile=str(tmp_path / "key.pem"),
        log_level="warning",
    )
    server = StartedServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert server.ready.wait(30), "uvicorn did not start"
        monkeypatch.setenv("LISTKIT_BASE_URL", f"https://127.0.0.1:{port}")
        result = doctor(run, site)
    finally:
        server.should_exit = True
        thread.join(10)
        ws.close()
    assert f"ok    Unsubscribe  https://127.0.0.1:{port}/healthz answers 200 over HTTPS" in (
        lines(result)
    )
    assert result.exit_code == 0, result.output


def test_an_spf_macro_doctor_cannot_expand_is_a_warning_not_a_broken_record(run, site):
    site["example.com."] = [txt("v=spf1 exists:%{ir}.%{v}._spf.example.com -all")]
    result = doctor(run, site)
    out = lines(result)
    assert (
        "WARN  SPF          doctor cannot evaluate the SPF record of example.com "
        "(macro %{ir} is not supported by doctor): check it with your provider's SPF tester"
    ) in out
    assert "permerror" not in result.output


def test_doctor_without_a_sender_names_the_setting(run, site, workspace):
    (workspace / ".env").write_text("")
    result = run("doctor", "--dns", "127.0.0.1:9", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: LISTKIT_FROM is not set:")


def test_with_a_bounce_address_spf_is_checked_for_the_envelope_domain(run, site, monkeypatch):
    # The From domain has no SPF record; the envelope (bounce) domain allows the relay.
    site["example.com."] = [("MX", "10 mx.example.com.")]
    site["news.example.com."] = [txt("v=spf1 include:_spf.relay.test -all")]
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@news.example.com")
    result = doctor(run, site)
    assert result.exit_code == 0, result.output
    out = lines(result)
    assert (
        "ok    SPF          news.example.com (the envelope sender, LISTKIT_BOUNCE_ADDRESS) "
        "allows your relay mail.relay.test: 203.0.113.7 (by include:_spf.relay.test)"
    ) in out
    assert (
        "ok    DMARC        _dmarc.example.com: p=quarantine; DKIM d=example.com aligned "
        "(relaxed) with From example.com; SPF envelope domain news.example.com "
        "(LISTKIT_BOUNCE_ADDRESS) aligned (relaxed) with From example.com"
    ) in out


def test_a_bounce_domain_without_spf_fails_even_when_the_from_domain_has_one(
    run, site, monkeypatch
):
    site["news.example.com."] = [("MX", "10 mx.example.com.")]  # it exists, without SPF
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@news.example.com")
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert (
        "FAIL  SPF          news.example.com (the envelope sender, LISTKIT_BOUNCE_ADDRESS) "
        "has no SPF record: receivers cannot tell which servers may send as it"
    ) in out
    assert any(line.startswith("-> Publish a TXT record at news.example.com ") for line in out)


def test_a_from_domain_that_does_not_exist_is_named_so_not_as_missing_spf(run, site, monkeypatch):
    monkeypatch.setenv("LISTKIT_FROM", "Shop <news@exampel.com>")  # a typo: no such domain
    result = doctor(run, site)
    assert result.exit_code == 1
    out = lines(result)
    assert (
        "FAIL  SPF          exampel.com does not exist in DNS (NXDOMAIN): no receiver can "
        "check mail sent as it"
    ) in out
    assert (
        "-> Check the domain of LISTKIT_FROM for a typo; a new domain needs its DNS zone "
        "published (with an SPF record) before it can send."
    ) in out
    assert not any("has no SPF record" in line for line in out)


def test_a_bounce_domain_that_does_not_exist_is_named_with_its_setting(run, site, monkeypatch):
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@bounce.exampel.com")
    out = lines(doctor(run, site))
    assert (
        "FAIL  SPF          bounce.exampel.com (the envelope sender, LISTKIT_BOUNCE_ADDRESS) "
        "does not exist in DNS (NXDOMAIN): no receiver can check mail sent as it"
    ) in out
    assert any(line.startswith("-> Check the domain of LISTKIT_BOUNCE_ADDRESS") for line in out)


def test_strict_spf_alignment_with_a_bounce_subdomain_is_named_with_the_way_out(
    run, site, monkeypatch
):
    site["news.example.com."] = [txt("v=spf1 include:_spf.relay.test -all")]
    site["_dmarc.example.com."] = [txt("v=DMARC1; p=reject; aspf=s")]
    monkeypatch.setenv("LISTKIT_BOUNCE_ADDRESS", "bounces@news.example.com")
    result = doctor(run, site)
    out = lines(result)
    assert (
        "WARN  DMARC        _dmarc.example.com: p=reject; DKIM d=example.com aligned "
        "(relaxed) with From example.com; SPF envelope domain news.example.com "
        "(LISTKIT_BOUNCE_ADDRESS) NOT aligned (strict) with From example.com"
    ) in out
    assert (
        "-> aspf=s aligns SPF only when the envelope domain is example.com itself: set "
        "LISTKIT_BOUNCE_ADDRESS to an address at example.com, or rely on DKIM alone."
    ) in out


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e308"])
def test_a_doctor_timeout_that_is_not_a_sensible_number_of_seconds_is_refused(run, value):
    # nan or inf would wait for ever on a DNS server that never answers.
    result = run("doctor", "--timeout", value, ok=False)
    assert result.exit_code == 2
    shown = f"{float(value):g}"  # 1e308 is shown as 1e+308
    assert result.output.endswith(
        f"Error: Invalid value for '--timeout': {shown} is not a number of seconds from "
        "more than 0 to 300\n"
    )
