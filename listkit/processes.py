"""Helper processes die with the process that started them.

The rule: a process listkit starts (the sender's rendering process) must
never outlive its parent. A parent killed with SIGKILL runs no cleanup, so
the child sees to it itself: on Linux the kernel signals it when the parent
dies (``PR_SET_PDEATHSIG``); elsewhere, and as a second line, a daemon
thread notices that its parent changed (it was re-parented) and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
_CHECK_EVERY = 0.5  # seconds between parent checks in the fallback thread


def exit_with_parent(parent_pid: int) -> None:
    """Call first thing in a child process: it ends when ``parent_pid`` ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still watches
    # The parent may have died before prctl took effect: check once now.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="listkit-parent").start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_CHECK_EVERY)
    os._exit(1)
