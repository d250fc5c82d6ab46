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
