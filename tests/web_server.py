"""A real `listkit serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.smtp_server import free_port
from tests.waiting import wait_until


def wait_healthy(proc: subprocess.Popen, base: str, log: Path, seconds: float = 30.0) -> None:
    """Wait until the `listkit serve` process ``proc`` answers ``base``/healthz; an
    AssertionError with its log if it exits first or never answers."""

    def answering() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"listkit serve exited {proc.returncode}:\n" + log.read_text(errors="replace")
            )
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(answering, seconds, every=0.05)
    except AssertionError:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """Stop ``proc`` as a person would (SIGTERM), killing it if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve(workspace: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `listkit serve` for ``workspace``; yield its base URL; stop it after.

    The process's output is kept in ``workspace/serve.log`` for the test to read.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    full_env.update(env or {})
    log = (workspace / "serve.log").open("wb")
    command = [sys.executable, "-m", "listkit", "--workspace", str(workspace), "serve"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, workspace / "serve.log")
        yield base
    finally:
        stop(proc)
        log.close()
