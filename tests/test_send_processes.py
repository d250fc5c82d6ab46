"""Real `listkit send` processes: killed mid-run, and two at once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listkit.workspace import Workspace
from tests import smtp_server
from tests.test_send import setup_campaign

N = 60


@pytest.fixture(params=["pipelined", "one-by-one"])
def server(request):
    controller, handler = smtp_server.start(pipelining=request.param == "pipelined")
    yield controller, handler
    controller.stop()


def listkit(workspace: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    return subprocess.Popen(
        [sys.executable, "-m", "listkit", "--workspace", str(workspace), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def delivery_states(workspace: Path) -> dict[str, tuple[str, str]]:
    ws = Workspace(workspace)
    try:
        return {
            mid: (email, state)
            for email, state, mid in ws.db.execute(
                "SELECT email, state, message_id FROM deliveries"
            )
        }
    finally:
        ws.close()


def test_killed_runs_resume_and_nobody_gets_two_messages(run, workspace, server):
    controller, handler = server
    addresses = [f"k{i}@example.com" for i in range(N)]
    # 40 messages a second: a run takes about 1.5 s, so each kill lands mid-run.
    setup_campaign(run, workspace, controller.port, addresses, extra="rate = 40\n")
    for n, delay in enumerate((0.6, 0.9, 1.2, 0.8)):
        proc = listkit(workspace, "send", "t", "--yes")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if n == 0:  # 60 messages at 40 a second cannot all be out yet
            sent = [s for _e, s in delivery_states(workspace).values() if s == "sent"]
            assert len(sent) < N
    final = listkit(workspace, "send", "t", "--yes")
    output, _ = final.communicate(timeout=60)
    states = delivery_states(workspace)
    at_sink = handler.count_by_message_id()
    assert len(states) == N
    assert sum(at_sink.values()) >= 1
    unknown = {mid for mid, (_e, state) in states.items() if state == "unknown"}
    for mid, (email, state) in states.items():
        assert state in ("sent", "unknown"), (email, state, output)
        if state == "sent":
            assert at_sink[mid] == 1, (email, at_sink[mid])
        else:
            assert at_sink[mid] <= 1, (email, at_sink[mid])
    assert set(at_sink) <= set(states)
    assert max(at_sink.values()) == 1
    if unknown:
        assert final.returncode == 1 and "unknown" in output
    else:
        assert final.returncode == 0, output


def test_two_sends_at_once_never_send_twice(run, workspace, server):
    controller, handler = server
    addresses = [f"p{i}@example.com" for i in range(N)]
    setup_campaign(run, workspace, controller.port, addresses, extra="rate = 100\n")
    first = listkit(workspace, "send", "t", "--yes")
    second = listkit(workspace, "send", "t", "--yes")
    outputs = [p.communicate(timeout=60)[0] for p in (first, second)]
    assert handler.recipients() == {a: 1 for a in addresses}
    assert max(handler.count_by_message_id().values()) == 1
    assert any("another listkit send is running" in out for out in outputs), outputs
    # Both runs together sent every message exactly once.
    assert json.loads(run("status", "t", "--json").output)["counts"]["sent"] == N
