"""Import processes: the forked reader never outlives the import that started it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the forked reader runs on Linux only"
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_killed_import_leaves_no_reader_process_behind(run, workspace, tmp_path):
    run("lists", "create", "blog")
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("email,name,city\n")
        f.writelines(f"person{i}@example.com,Person {i},Town {i % 97}\n" for i in range(300_000))
    assert big.stat().st_size > 1 << 20  # read in the forked reader
    command = [sys.executable, "-m", "listkit", "--workspace", str(workspace)]
    command += ["subscribers", "import", str(big), "--list", "blog"]
    importer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers: list[int] = []
    try:
        assert _wait(lambda: bool(readers.extend(_children(importer.pid)) or readers), 30), (
            "the import never started its reader process"
        )
        assert importer.poll() is None, "the import ended before it could be killed"
        importer.send_signal(signal.SIGKILL)
        importer.wait()
        assert _wait(lambda: not any(_running(pid) for pid in readers), 10), (
            f"reader process {readers} still running after its parent was killed"
        )
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.wait()
        for pid in readers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
