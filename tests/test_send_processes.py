"""Real `listkit send` processes: killed mid-run, and two at once."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from listkit.mail.message_ids import message_id
from listkit.workspace import Workspace
from tests import smtp_server
from tests.test_send import setup_campaign
from tests.world import World, delivery_counts

N = 60


# Every test taking `server` runs against a server with and without PIPELINING.
SMTP_MODES = ("pipelined", "one-by-one")


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
        domain = ws.settings.sender_address()[1].rpartition("@")[2]
        states = dict(ws.db.execute("SELECT id, state FROM deliveries"))
        by_id = {
            did: email
            for did, email in ws.db.execute(
                "SELECT d.id, s.email FROM deliveries d"
                " JOIN subscribers s ON s.id = d.subscriber_id"
            )
        }
        world = World(ws.db)
        return {
            message_id(world.token(did), domain): (email, states[did])
            for did, email in by_id.items()
        }
    finally:
        ws.close()


def test_killed_runs_resume_and_nobody_gets_two_messages(run, workspace, server):
    controller, handler = server
    addresses = [f"k{i}@example.com" for i in range(N)]
    # 40 messages a second: a run takes about 1.5 s, so each kill lands mid-run,
    # once the server has taken a few more messages of that run.
    setup_campaign(run, workspace, controller.port, addresses, extra="rate = 40\n")
    for n, more in enumerate((4, 7, 10, 6)):
        proc = listkit(workspace, "send", "t", "--yes")
        taken = len(handler.messages)
        handler.wait_for(lambda: len(handler.messages) >= taken + more)  # noqa: B023
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
    # The counts the report reads were kept in the killed runs' own transactions.
    ws = Workspace(workspace)
    try:
        kept, grouped = delivery_counts(ws.db)
    finally:
        ws.close()
    assert kept == grouped
    if unknown:
        assert final.returncode == 1 and "unknown" in output
    else:
        assert final.returncode == 0, output


def test_two_sends_at_once_never_send_twice(run, workspace, server):
    controller, handler = server
    addresses = [f"p{i}@example.com" for i in range(N)]
    # The server takes the first run's messages but answers none until the second run
    # has ended: the two surely overlap, however slowly either process starts. The
    # first run waits that long for its answer: on a busy machine longer than the
    # 2 s the other tests give the server, after which its message would be unknown.
    setup_campaign(run, workspace, controller.port, addresses, extra="rate = 100\n", timeout=60)
    answer = threading.Event()
    take = handler.handle_DATA

    async def take_and_hold(*args):
        reply = await take(*args)
        await asyncio.to_thread(answer.wait, 60)
        return reply

    handler.handle_DATA = take_and_hold
    first = listkit(workspace, "send", "t", "--yes")
    handler.wait_for(lambda: handler.messages)
    second = listkit(workspace, "send", "t", "--yes")
    outputs = [second.communicate(timeout=60)[0]]
    assert len(handler.messages) < N  # the first run was still sending
    answer.set()
    outputs.append(first.communicate(timeout=60)[0])
    assert handler.recipients() == {a: 1 for a in addresses}
    assert max(handler.count_by_message_id().values()) == 1
    assert "another listkit send is running" in outputs[0], outputs
    # Both runs together sent every message exactly once.
    assert json.loads(run("status", "t", "--json").output)["counts"]["sent"] == N


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc; zombies count as gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.add(pid)
        except OSError:
            pass
    return left


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc")
def test_a_send_killed_with_sigkill_leaves_no_process_behind(run, workspace, tmp_path):
    controller, _handler = smtp_server.start()
    try:
        setup_campaign(run, workspace, controller.port, ["first@example.com"], extra="rate = 50\n")
        many = tmp_path / "many.csv"  # enough recipients for the rendering process
        many.write_text("email\n" + "".join(f"k{i}@example.com\n" for i in range(1100)))
        run("subscribers", "import", str(many), "--list", "blog")
        proc = listkit(workspace, "send", "t", "--yes")
        deadline = time.monotonic() + 30
        helpers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            helpers = descendants(proc.pid)
            if helpers and totals_sent(workspace) > 0:
                break
            time.sleep(0.05)
        assert helpers, "the send started no helper process"
        assert proc.poll() is None, "the send ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while alive(helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(helpers) == set()
    finally:
        controller.stop()


def totals_sent(workspace: Path) -> int:
    return sum(1 for _e, s in delivery_states(workspace).values() if s == "sent")


def test_two_workspaces_sharing_one_database_cannot_send_at_once(run, workspace, tmp_path):
    # The lock must guard the database, not the folder: a second run's recovery would put
    # the first run's claimed messages back to pending, and both would send them.
    from listkit.errors import ListkitError
    from listkit.send.sender import send_campaign, send_lock
    from listkit.workspace import init_workspace

    controller, handler = smtp_server.start(pipelining=True)
    try:
        setup_campaign(run, workspace, controller.port, ["a@example.com", "b@example.com"])
        other = tmp_path / "other"
        init_workspace(other)
        env = (
            (workspace / ".env")
            .read_text()
            .replace("LISTKIT_DB=listkit.db", f"LISTKIT_DB={workspace / 'listkit.db'}")
        )
        (other / ".env").write_text(env)
        (other / "campaigns" / "t.toml").write_text(
            (workspace / "campaigns" / "t.toml").read_text()
        )
        ws = Workspace(other)
        try:
            with send_lock(workspace), pytest.raises(ListkitError, match="another listkit send"):
                send_campaign(ws, "t")
        finally:
            ws.close()
    finally:
        controller.stop()
    assert handler.messages == []


def test_a_send_killed_while_the_server_holds_a_message_resends_nothing(run, workspace, server):
    controller, handler = server
    addresses = [f"h{i}@example.com" for i in range(6)]
    setup_campaign(run, workspace, controller.port, addresses, timeout=60)
    # The server takes h2's content and never answers the final dot.
    handler.fault("h2@example.com", "timeout_after_data")
    proc = listkit(workspace, "send", "t", "--yes")
    handler.wait_for(lambda: "h2@example.com" in handler.recipients())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = listkit(workspace, "send", "t", "--yes")
    output, _ = final.communicate(timeout=60)
    states = {email: state for email, state in delivery_states(workspace).values()}
    # It may be out (it is: the server has it), so the next run must not send it again.
    assert states["h2@example.com"] == "unknown", output
    assert handler.recipients()["h2@example.com"] == 1
    assert max(handler.recipients().values()) == 1
    # The others: sent once, or unknown if the kill caught them in flight too.
    for address, state in states.items():
        assert state in ("sent", "unknown"), (address, state, output)
        if state == "sent":
            assert handler.recipients()[address] == 1, address
    assert final.returncode == 1 and "unknown" in output
