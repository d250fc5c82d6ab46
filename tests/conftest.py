"""Shared fixtures: every test runs in its own temporary workspace.

The autouse ``env_setup`` fixture clears ``LISTKIT_*`` settings from the
environment so that a developer's own settings never leak into a test.

The temporary folders (``tmp_path``, and the temporary files of the processes
tests start) are in memory (``/dev/shm``) where the machine has room there and
TMPDIR does not say otherwise: every commit of a test database waits for an
fsync, which on a disk costs a test far more than its work does, and what an
fsync guards against (a power cut) is nothing a test can see. The workspace a test
starts from is one made by `listkit init` once per test process and copied.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from listkit import db as listkit_db
from listkit.cli import cli
from listkit.send import run as send_run
from listkit.web.pages import ConfirmationMailer
from listkit.workspace import Workspace, init_workspace
from tests import smtp_server
from tests.world import World

MEMORY = Path("/dev/shm")
MEMORY_NEEDED = 2 << 30  # bytes free in MEMORY for the suite's temporary folders


def pytest_configure(config: pytest.Config) -> None:
    """Temporary folders in memory where there is room, unless TMPDIR or --basetemp
    chooses a place (see the module's docstring). Processes started by the tests
    (``xdist``'s workers among them) inherit it."""
    if "TMPDIR" in os.environ or config.option.basetemp or not MEMORY.is_dir():
        return
    try:
        room = os.statvfs(MEMORY)
    except OSError:
        return
    if os.access(MEMORY, os.W_OK | os.X_OK) and room.f_bavail * room.f_frsize >= MEMORY_NEEDED:
        os.environ["TMPDIR"] = str(MEMORY)
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.fixture(autouse=True)
def env_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LISTKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def backoff_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sender's pauses between failed connection attempts, recorded, not waited."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(send_run, "backoff_sleep", pause)
    return pauses


@pytest.fixture(autouse=True)
def short_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """The confirmation mailer gathers a second's signups before deciding them (so
    the work lands on few answers' time); in-process tests gather for 20 ms, so a
    signup test does not wait a second. A real `listkit serve` keeps the second."""
    monkeypatch.setattr(ConfirmationMailer, "GATHER", 0.02)


class MovedClock:
    """listkit's clock (``db.clock``) under a test's hand: ``clock()`` is listkit's
    now, ``clock.move(days=2)`` lives through two days at once."""

    def __call__(self) -> datetime:
        return listkit_db.clock()

    def move(self, **delta: float) -> datetime:
        listkit_db.clock.offset += timedelta(**delta)
        return self()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    """Move listkit's clock forward through a test (stored times, what is due)."""
    monkeypatch.setattr(listkit_db.clock, "offset", timedelta())
    return MovedClock()


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on."""
    return smtp_server.free_port()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets ``SMTP_MODES`` runs each test taking ``server`` once per mode."""
    modes = getattr(metafunc.module, "SMTP_MODES", None)
    if modes and "server" in metafunc.fixturenames:
        metafunc.parametrize("server", modes, indirect=True)


@pytest.fixture
def smtp_handler():
    """The handler `server` records with: None for smtp_server.FaultHandler; a test
    module overrides this fixture to record something else."""
    return None


@pytest.fixture
def server(request: pytest.FixtureRequest, smtp_handler):
    """A real SMTP server (aiosmtpd) on loopback: (controller, handler).

    It advertises PIPELINING unless the test runs in the "one-by-one" mode
    (see ``SMTP_MODES``)."""
    mode = getattr(request, "param", "pipelined")
    controller, handler = smtp_server.start(smtp_handler, pipelining=mode == "pipelined")
    yield controller, handler
    controller.stop()


@pytest.fixture(scope="session")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace made by `listkit init`, once per test process: ``workspace`` copies it."""
    root = tmp_path_factory.mktemp("initialised") / "ws"
    init_workspace(root)
    return root


@pytest.fixture
def workspace(initialised: Path, tmp_path: Path) -> Path:
    """A fresh workspace, as `listkit init` makes it (a copy of ``initialised``: its
    files, their modes and its migrated database)."""
    root = tmp_path / "ws"
    shutil.copytree(initialised, root)
    return root


@pytest.fixture
def ws(workspace: Path):
    """The library's view of the fresh workspace, closed after the test."""
    w = Workspace(workspace)
    yield w
    w.close()


@pytest.fixture
def run(workspace: Path):
    """Run a listkit command in the fresh workspace: run("lists", "ls")."""
    runner = CliRunner()

    def _run(*args: str, input: str | bytes | None = None, ok: bool = True):
        result = runner.invoke(cli, ["--workspace", str(workspace), *args], input=input)
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"listkit {' '.join(args)} exited {result.exit_code}:\n{result.output}"
                + (f"\n{result.exception!r}" if result.exception else "")
            )
        return result

    return _run


@pytest.fixture
def world(ws) -> World:
    """Rows written straight into the fresh workspace's database (tests/world.py).

    A module builds its scenario by overriding this fixture: ``def world(world)``."""
    return World(ws.db)
