"""Real `listkit send --due` processes killed with SIGKILL mid-step: the next run
resumes, and no reader gets a step twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from listkit.mail.message_ids import message_id
from listkit.mail.tracking import row_token
from listkit.workspace import Workspace
from tests.smtp_server import FaultHandler
from tests.test_send_processes import listkit

EXAMPLES = Path(__file__).resolve().parent.parent / "sequences"
N = 40


class SlowHandler(FaultHandler):
    """Takes 25 ms over each message, so that a kill lands in the middle of a step."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.025)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp_handler():
    return SlowHandler()


def test_send_due_killed_mid_step_resumes_and_mails_nobody_twice(run, workspace, server, tmp_path):
    controller, handler = server
    env = (workspace / ".env").read_text()
    (workspace / ".env").write_text(
        env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{controller.port}")
    )
    run("lists", "create", "blog")
    (workspace / "sequences").mkdir()
    text = (EXAMPLES / "welcome.toml").read_text()
    text = text.replace("holdout = 0.1", "holdout = 0").replace(
        'imported = "ignore"', 'imported = "join"'
    )
    (workspace / "sequences" / "welcome.toml").write_text(text)
    run("sequences", "check", "welcome")
    people = tmp_path / "people.csv"
    people.write_text("email\n" + "".join(f"k{i}@example.com\n" for i in range(N)))
    run("subscribers", "import", str(people), "--list", "blog")
    for more in (3, 6, 5):
        proc = listkit(workspace, "send", "--due")
        taken = len(handler.messages)
        handler.wait_for(lambda: len(handler.messages) >= taken + more)  # noqa: B023
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(handler.messages) < N  # the kills landed mid-step
    final = listkit(workspace, "send", "--due")
    output, _ = final.communicate(timeout=120)
    ws = Workspace(workspace)
    try:
        domain = ws.settings.sender_address()[1].rpartition("@")[2]
        secret = ws.settings.secret_key()
        states = {
            message_id(row_token(secret, did, legacy), domain): state
            for did, legacy, state in ws.db.execute(
                """SELECT d.id, d.legacy_token, d.state FROM deliveries d JOIN campaigns c
                   ON c.id = d.campaign_id WHERE c.slug = 'welcome/download'"""
            ).fetchall()
        }
        passed = ws.db.execute("SELECT step, COUNT(*) FROM enrollments GROUP BY step").fetchall()
    finally:
        ws.close()
    at_sink = handler.count_by_message_id()
    assert len(states) == N, output
    assert passed == [("download", N)]
    assert max(at_sink.values()) == 1
    assert max(Counter(r for _m, r, _d in handler.messages).values()) == 1
    for mid, state in states.items():
        assert state in ("sent", "unknown"), (state, output)
        if state == "sent":
            assert at_sink[mid] == 1
