"""`listkit serve` against clients that never finish a request (slowloris).

A real `listkit serve` process on loopback, with a small ``--request-timeout``;
raw sockets send the start of a request and then dribble a byte at a time, or
nothing. The server must close them (answering 408 where it can) while they
are still dribbling, keep answering others, and log no error.
"""

from __future__ import annotations

import base64
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.web_server import serve

LIMIT = "0.5"  # seconds: --request-timeout for these tests
# A dribbler gives up after this many pieces, 0.05 s apart (five seconds, ten
# times the limit): a server that has not closed the connection by then never will.
PIECES = 100


def connect(base: str) -> socket.socket:
    parts = urlsplit(base)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_server(s: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is open."""
    s.setblocking(False)
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    finally:
        s.setblocking(True)
    if not data:
        return b""
    # The answer came; the close follows it.
    s.settimeout(10)
    rest = data
    while chunk := s.recv(65536):
        rest += chunk
    return rest


def dribble(s: socket.socket, start: bytes, piece: bytes) -> bytes | None:
    """Send ``start``, then ``piece`` every 0.05 s until the server closes the
    connection (returns what it answered) or PIECES were sent (returns None)."""
    s.sendall(start)
    for _ in range(PIECES):
        time.sleep(0.05)
        answer = closed_by_server(s)
        if answer is not None:
            return answer
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return b""
    return None


@pytest.fixture(scope="module")
def served(initialised, tmp_path_factory) -> tuple[str, Path]:
    """One `listkit serve` for the module's tests (a server closes what a client left
    unfinished, and stays up for the next): its base URL and its log."""
    workspace = tmp_path_factory.mktemp("served") / "ws"
    shutil.copytree(initialised, workspace)
    # Every webhook route on (a route whose setting is unset answers 404 unread).
    env = {
        "LISTKIT_WEBHOOK_SECRET": "listkit-hook-secret-0123456789",
        "LISTKIT_STRIPE_WEBHOOK_SECRET": "whsec_test_current_0123456789",
        "LISTKIT_SES_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:ses-bounces",
        "LISTKIT_POSTMARK_WEBHOOK_AUTH": "postmark:hook-secret",
        "LISTKIT_MAILGUN_SIGNING_KEY": "key-0123456789abcdef0123456789abcdef",
    }
    with serve(workspace, "--request-timeout", LIMIT, env=env) as base:
        yield base, workspace / "serve.log"


@pytest.fixture
def service(served) -> str:
    return served[0]


@pytest.fixture
def service_log(served) -> Path:
    """The server's log, with what the module's earlier tests made it write."""
    return served[1]


HEAD = b"POST /hooks/sale HTTP/1.1\r\nHost: lists.example.com\r\n"


@pytest.mark.parametrize(
    "start, piece",
    [
        (b"", b""),  # connects and says nothing
        (HEAD, b"X"),  # a header that never ends
        (HEAD, b"X-Slow: 1\r\n"),  # headers that never end
        (HEAD + b"Content-Length: 1000\r\n\r\n", b"{"),  # a body that never ends
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n{\r\n"),  # chunks without an end
    ],
    ids=["silent", "one long header", "endless headers", "slow body", "endless chunks"],
)
def test_a_request_that_does_not_arrive_within_the_limit_is_answered_408_and_closed(
    service, service_log, start, piece
):
    with connect(service) as s:
        answer = dribble(s, start, piece)
    assert answer is not None, "the server still holds the connection open"
    assert answer.startswith(b"HTTP/1.1 408 ")
    log = service_log.read_text()
    assert "Traceback" not in log and " ERROR " not in log


def test_two_hundred_unfinished_requests_are_all_closed_and_the_server_still_answers(
    service, service_log
):
    sockets = [connect(service) for _ in range(200)]
    try:
        for s in sockets:
            s.sendall(HEAD + b"X-Slow: ")
        open_ = list(sockets)
        for _ in range(PIECES):
            time.sleep(0.05)
            open_ = [s for s in open_ if closed_by_server(s) is None]
            if not open_:
                break
        assert open_ == [], f"{len(open_)} of 200 connections are still open"
        with urllib.request.urlopen(service + "/healthz", timeout=10) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
    finally:
        for s in sockets:
            s.close()
    log = service_log.read_text()
    assert "Traceback" not in log and " ERROR " not in log


def test_a_request_that_arrives_in_time_is_answered_over_a_kept_alive_connection(service):
    with connect(service) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: lists.example.com\r\n\r\n")
            answer = b""
            while b"ok\n" not in answer:
                answer += s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
            # The next request on this connection comes later than the limit after
            # the connection was opened: its own deadline starts with its first byte.
            time.sleep(0.3)


HOSTILE = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' + b"9" * 5000 + b"}",
    b'{"Type": "Notification", "SignatureVersion": [1], "Signature": 7}',
    '{"signature": {"timestamp": "١", "token": "é", "signature": "é"}}'.encode(),
    b"\xff\xfe{",
]


def test_hostile_bodies_on_the_webhook_routes_of_a_real_server_log_no_error(service, service_log):
    auth = "Basic " + base64.b64encode(b"postmark:hook-secret").decode()
    statuses = set()
    for route in ("/relays/ses", "/relays/mailgun", "/relays/postmark", "/hooks/sale"):
        for body in HOSTILE:
            request = urllib.request.Request(
                service + route, data=body, method="POST", headers={"Authorization": auth}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    statuses.add((route, r.status))
            except urllib.error.HTTPError as e:
                statuses.add((route, e.code))
    # Postmark's credentials are right: a JSON object of no Postmark shape is no bounce.
    assert {code for _route, code in statuses} == {400, 403} | {200}
    assert statuses >= {(r, 400) for r in ("/relays/ses", "/relays/mailgun", "/hooks/sale")}
    log = service_log.read_text()
    assert "Traceback" not in log and " ERROR " not in log and " 500 " not in log


def test_serve_refuses_a_request_timeout_that_is_not_a_positive_number(run):
    result = run("serve", "--request-timeout", "0", ok=False)
    assert result.exit_code == 2 and "--request-timeout" in result.output
