"""The one run lock, held by `listkit send` and `listkit bounces fetch` alike."""

import os
import subprocess
import sys

import pytest

from listkit.runlock import AlreadyRunning, run_lock

HOLD = """
import sys
from pathlib import Path
from listkit.runlock import run_lock
with run_lock(Path(sys.argv[1]), str):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_is_told_the_pid_of_the_process_holding_the_lock(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AlreadyRunning) as e, run_lock(path, lambda pid: f"busy, pid {pid}"):
            pass
    finally:
        holder.communicate("")
    assert str(e.value) == f"busy, pid {holder.pid}"
    assert e.value.holder == str(holder.pid)
    with run_lock(path, str):  # released when the holder ended
        assert path.read_text() == str(os.getpid())
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_bounces_fetch_lock_on_a_full_disk_is_named(run, workspace, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    monkeypatch.setenv("LISTKIT_IMAP_URL", "imaps://u:pw@127.0.0.1:1/INBOX")
    (workspace / ".listkit-bounces.lock").symlink_to("/dev/full")  # writes fail: ENOSPC
    result = run("bounces", "fetch", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {workspace / '.listkit-bounces.lock'}: no space left on the device; free "
        "some space and run the command again\n"
    )


def test_the_rest_of_an_offer_test_is_not_released_while_a_send_holds_the_shared_database(
    run, workspace, tmp_path
):
    # Two workspaces sharing one database share the send lock: the rest of an offer
    # test is released under it, never while another workspace's send runs.
    import shutil
    from datetime import UTC, datetime, timedelta

    from listkit.send.due import send_due
    from listkit.send.sender import send_lock
    from listkit.workspace import Workspace, init_workspace
    from tests import smtp_server
    from tests.test_send import setup_campaign

    shutil.copytree(workspace / "offers" / "launch", workspace / "offers" / "bundle")
    addresses = [f"r{i}@example.com" for i in range(20)]
    test = 'variants = ["launch", "bundle"]\ntest_share = 0.3\ntest_wait = "1d"\n'
    controller, _handler = smtp_server.start()
    try:
        setup_campaign(run, workspace, controller.port, addresses, extra=test)
        run("send", "t", "--yes")
    finally:
        controller.stop()
    other = tmp_path / "other"
    init_workspace(other)
    (other / ".env").write_text(
        (workspace / ".env")
        .read_text()
        .replace("LISTKIT_DB=listkit.db", f"LISTKIT_DB={workspace / 'listkit.db'}")
    )
    shutil.copy(workspace / "campaigns" / "t.toml", other / "campaigns" / "t.toml")
    shutil.copytree(workspace / "offers" / "bundle", other / "offers" / "bundle")
    ws = Workspace(other)
    try:
        earlier = (datetime.now(UTC) - timedelta(days=1, minutes=1)).isoformat()
        ws.db.execute("UPDATE campaigns SET finished = ? WHERE slug = 't'", [earlier])
        ws.db.conn.commit()
        reserved = "SELECT count(*) FROM deliveries WHERE state = 'reserved'"
        before = ws.db.execute(reserved).fetchone()[0]
        with send_lock(workspace):  # a send in the first workspace
            (outcome,) = send_due(ws)
        after = ws.db.execute(reserved).fetchone()[0]
    finally:
        ws.close()
    assert before > 0
    assert (outcome.action, after) == ("locked", before)
    assert "another listkit send is running in" in outcome.message
