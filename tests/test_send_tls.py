"""STARTTLS and implicit TLS with AUTH, against aiosmtpd with a test certificate."""

import ssl

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from listkit.workspace import Workspace
from tests import smtp_server
from tests.test_send import ADDRS, setup_campaign


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"ann",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def server_context(authority) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def use(workspace, url, ca_path=None):
    env = (workspace / ".env").read_text()
    lines = [line for line in env.splitlines() if not line.startswith("LISTKIT_SMTP")]
    lines.append(f"LISTKIT_SMTP_URL={url}")
    if ca_path:
        lines.append(f"LISTKIT_SMTP_CA={ca_path}")
    (workspace / ".env").write_text("\n".join(lines) + "\n")


def states(workspace):
    ws = Workspace(workspace)
    try:
        return dict(
            ws.db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        )
    finally:
        ws.close()


@pytest.fixture
def starttls_server(ca):
    controller, handler = smtp_server.start(
        tls_context=server_context(ca[0]),
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    yield controller, handler
    controller.stop()


@pytest.fixture
def implicit_tls_server(ca):
    controller, handler = smtp_server.start(
        ssl_context=server_context(ca[0]),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    yield controller, handler
    controller.stop()


def test_starttls_with_auth_sends(run, workspace, starttls_server, ca):
    controller, handler = starttls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtp+starttls://ann:s3cret@127.0.0.1:{controller.port}?timeout=5", ca[1])
    run("send", "t", "--yes")
    assert handler.recipients() == {a: 1 for a in ADDRS}


def test_implicit_tls_with_auth_sends(run, workspace, implicit_tls_server, ca):
    controller, handler = implicit_tls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtps://ann:s3cret@127.0.0.1:{controller.port}?timeout=5", ca[1])
    run("send", "t", "--yes")
    assert handler.recipients() == {a: 1 for a in ADDRS}


def test_wrong_password_names_the_setting_and_changes_no_delivery(
    run, workspace, starttls_server, ca
):
    controller, handler = starttls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtp+starttls://ann:wrong@127.0.0.1:{controller.port}?timeout=5", ca[1])
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: LISTKIT_SMTP_URL (smtp+starttls://ann:****@127.0.0.1:{controller.port}): "
        "the server refused the login for user 'ann': 535"
    )
    assert "wrong" not in result.output
    assert states(workspace) == {"pending": len(ADDRS)}
    assert handler.messages == []


def test_server_without_starttls_is_a_clear_error(run, workspace, ca):
    controller, _handler = smtp_server.start()  # plain, no STARTTLS offered
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        use(workspace, f"smtp+starttls://ann:s3cret@127.0.0.1:{controller.port}?timeout=5", ca[1])
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert "LISTKIT_SMTP_URL" in result.output
    assert "does not offer STARTTLS" in result.output
    assert states(workspace) == {"pending": len(ADDRS)}


def test_untrusted_certificate_is_refused(run, workspace, implicit_tls_server):
    controller, _handler = implicit_tls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtps://ann:s3cret@127.0.0.1:{controller.port}?timeout=5")
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert "LISTKIT_SMTP_URL" in result.output
    assert "TLS certificate is not trusted" in result.output and "LISTKIT_SMTP_CA" in result.output
    assert states(workspace) == {"pending": len(ADDRS)}


def test_a_wrong_password_is_tried_once_by_one_connection_only(run, workspace, ca):
    attempts = []

    def counting(server, session, envelope, mechanism, auth_data):
        attempts.append(mechanism)
        return AuthResult(success=False, handled=False)

    controller, handler = smtp_server.start(
        tls_context=server_context(ca[0]),
        require_starttls=True,
        authenticator=counting,
        auth_require_tls=True,
    )
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        (workspace / "campaigns" / "t.toml").write_text(
            'offer = "launch"\nlists = ["blog"]\nconcurrency = 4\n'
        )
        use(workspace, f"smtp+starttls://ann:wrong@127.0.0.1:{controller.port}?timeout=5", ca[1])
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert "refused the login for user 'ann'" in result.output
    assert len(attempts) == 1, attempts  # one mechanism, one connection
    assert handler.ehlo_count <= 2  # one connection: EHLO before and after STARTTLS
    assert states(workspace) == {"pending": len(ADDRS)}


def test_a_refused_starttls_stops_at_once_and_is_named(run, workspace):
    from tests.test_smtp import RecordingServer

    replies = {b"STARTTLS": b"454 4.7.0 TLS not available due to temporary reason"}
    with RecordingServer(True, extensions=(b"STARTTLS",), replies=replies) as server:
        setup_campaign(run, workspace, server.port, ADDRS)
        use(workspace, f"smtp+starttls://127.0.0.1:{server.port}?timeout=5")
        result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: LISTKIT_SMTP_URL (smtp+starttls://127.0.0.1:{server.port}): the server "
        "refused STARTTLS: 454 4.7.0 TLS not available due to temporary reason"
    )
    assert server.commands.count(b"STARTTLS") == 1
    assert states(workspace) == {"pending": len(ADDRS)}


def test_implicit_tls_against_a_plain_port_names_the_tls_mode_not_the_ca(run, workspace, ca):
    controller, _handler = smtp_server.start(
        tls_context=server_context(ca[0]), authenticator=authenticator
    )  # a STARTTLS port such as 587
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        use(workspace, f"smtps://ann:s3cret@127.0.0.1:{controller.port}?timeout=5", ca[1])
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert "does not speak TLS from the start" in result.output
    assert "smtp+starttls://" in result.output
    assert "LISTKIT_SMTP_CA" not in result.output and "not trusted" not in result.output
    assert states(workspace) == {"pending": len(ADDRS)}


def test_a_certificate_for_another_name_is_named_as_such(run, workspace, ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("mail.example.net").configure_cert(context)
    controller, _handler = smtp_server.start(ssl_context=context, authenticator=authenticator)
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        use(workspace, f"smtps://ann:s3cret@127.0.0.1:{controller.port}?timeout=5", ca[1])
        result = run("send", "t", "--yes", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert "the server's TLS certificate is not for 127.0.0.1" in result.output
    assert "LISTKIT_SMTP_CA" not in result.output
    assert states(workspace) == {"pending": len(ADDRS)}


def test_an_untrusted_ca_is_named_with_the_setting_that_fixes_it(run, workspace, starttls_server):
    controller, _handler = starttls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtp+starttls://ann:s3cret@127.0.0.1:{controller.port}?timeout=5")
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert "TLS certificate is not trusted" in result.output
    assert "set LISTKIT_SMTP_CA" in result.output
    assert states(workspace) == {"pending": len(ADDRS)}


def test_send_due_tries_a_wrong_password_once_for_all_due_campaigns(run, workspace, ca):
    from datetime import UTC, datetime, timedelta

    attempts = []

    def counting(server, session, envelope, mechanism, auth_data):
        attempts.append(mechanism)
        return AuthResult(success=False, handled=False)

    controller, _handler = smtp_server.start(
        tls_context=server_context(ca[0]), authenticator=counting, auth_require_tls=True
    )
    try:
        setup_campaign(run, workspace, controller.port, ADDRS)
        due = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        for slug in ("t", "u"):
            (workspace / "campaigns" / f"{slug}.toml").write_text(
                f'offer = "launch"\nlists = ["blog"]\nsend_at = "{due}"\n'
            )
        use(workspace, f"smtp+starttls://ann:wrong@127.0.0.1:{controller.port}?timeout=5", ca[1])
        result = run("send", "--due", ok=False)
    finally:
        controller.stop()
    assert result.exit_code == 1
    assert len(attempts) == 1, attempts
    assert "refused the login" in result.output and "later campaigns wait" in result.output


def test_starttls_against_an_implicit_tls_port_names_the_tls_mode(
    run, workspace, implicit_tls_server, ca
):
    controller, _handler = implicit_tls_server
    setup_campaign(run, workspace, controller.port, ADDRS)
    use(workspace, f"smtp+starttls://ann:s3cret@127.0.0.1:{controller.port}?timeout=1", ca[1])
    result = run("send", "t", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: LISTKIT_SMTP_URL (smtp+starttls://ann:****@127.0.0.1:{controller.port}): "
        "connected, but the server sent no greeting within 1 s; if port "
        f"{controller.port} expects TLS from the start (implicit TLS, usually 465), use "
        "smtps://\n"
    )
    assert states(workspace) == {"pending": len(ADDRS)}
