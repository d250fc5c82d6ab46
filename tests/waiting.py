"""Waiting for what gives no signal in tests: another process, a database row.

Where a signal exists, wait on it instead (``FaultHandler.wait_for`` wakes on
each message the test SMTP server takes). No test sleeps a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], seconds: float = 30.0, every: float = 0.02):
    """Check ``predicate()`` every ``every`` s until it holds; its value. For what
    gives no signal (another process, a database row); ``seconds`` only bounds a
    test that would hang."""
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s in vain")
        time.sleep(every)
    return value
