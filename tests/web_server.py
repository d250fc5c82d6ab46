"""A real `listkit serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.smtp_server import free_port


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
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"listkit serve exited {proc.returncode}:\n"
                    + (workspace / "serve.log").read_text()
                )
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("listkit serve did not answer /healthz within 20 s")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
