"""The run lock: one `listkit send`, one `listkit bounces fetch`, ... at a time.

The rule: a command that must not overlap with itself (cron runs may) holds
its lock file with ``flock`` for its whole run; a second run finds it held,
does nothing and says so (``AlreadyRunning``, naming the holder's pid). The
lock is released when the holder's file closes, so a run killed with SIGKILL
leaves no stale lock. The file is created private and holds the pid only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from listkit.errors import ListkitError
from listkit.files import PRIVATE


class AlreadyRunning(ListkitError):
    """Another run holds the lock; ``holder`` is its pid ("?" when unknown)."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def run_lock(path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold the lock file ``path``; raise AlreadyRunning(``busy(holder's pid)``) if
    another run holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(busy(holder), holder) from None
        pid = str(os.getpid()).encode()
        try:
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError as e:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, str(path)) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
