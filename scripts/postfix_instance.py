"""What the integration scripts share: Debian packages, a Postfix of their own, ports, a limit.

``scripts/integration_bounces.py`` and ``scripts/integration_dkim.py`` run as
root against real servers on loopback. This module holds the parts they both
need; each script keeps its own servers and checks (Dovecot and IMAP, the DKIM
verification):

- ``install_packages``: Debian packages from apt-get, without starting any
  system instance (a ``policy-rc.d`` that says no to every ``invoke-rc.d``
  while they install; only a policy written here is removed afterwards);
- ``Postfix``: an instance with its own configuration directory
  (``postfix -c DIR``), queue, data directory and log in a folder of the run,
  listening on one loopback port; as a context manager it starts, waits for
  its port, and always stops; the system's /etc/postfix is never read;
- ``temporary_folder``: the run's folder (mode 0755, Postfix's daemons walk
  into it), removed afterwards unless kept;
- ``free_port``, ``port_open``, ``wait_until``: free high loopback ports, so
  that runs on a shared machine do not collide, and waiting for something;
- ``time_limit``: SIGTERM and a SIGALRM after LIMIT seconds raise SystemExit,
  so that the scripts' ``finally`` blocks stop the servers and clean up;
- ``listkit``, ``listkit_or_exit``: the ``listkit`` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTFIX = "/usr/sbin/postfix"
LISTKIT = [sys.executable, "-m", "listkit"]
LIMIT = 180  # seconds: a run that takes longer stops, and still cleans up

# Postfix's services, from Debian's master.cf, none chrooted; the first line
# listens on the run's loopback port.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
local      unix  - n n -  - local
virtual    unix  - n n -  - virtual
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

# What every instance says; each script adds its own routing.
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
maillog_file = {folder}/postfix.log
maillog_file_prefixes = {folder}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {domain}
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
"""


def free_port() -> int:
    """A free high TCP port on 127.0.0.1 (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Whether ``check()`` came true within ``seconds`` (asked every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def time_limit(name: str, seconds: int = LIMIT) -> None:
    """SIGTERM, or ``seconds`` passing, raises SystemExit: ``finally`` blocks still run."""

    def stop(signum, _frame) -> None:
        why = f"took longer than {seconds} s" if signum == signal.SIGALRM else "terminated"
        raise SystemExit(f"{name}: stopped: {why}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)


def install_packages(packages: list[str], say: Callable[[str], None]) -> None:
    """Install Debian ``packages`` (the missing ones) with no service started."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"{', '.join(packages)} missing: run as root (it installs them) or install them"
        )
    if not shutil.which("apt-get"):
        raise SystemExit(f"{', '.join(packages)} missing and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # No service may start during the installation (a system Postfix would outlive
    # the run): policy-rc.d says no to every invoke-rc.d (Debian's policy interface).
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        say(f"installing {' '.join(packages)} (Debian packages) ...")
        subprocess.run(
            ["debconf-set-selections"],
            input="postfix postfix/main_mailer_type select No configuration\n",
            text=True,
            check=False,
            env=env,
        )
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
        )
    finally:
        if ours:
            policy.unlink()


def postfix_missing() -> list[str]:
    return [] if Path(POSTFIX).exists() else ["postfix"]


@contextlib.contextmanager
def temporary_folder(prefix: str, keep: bool, say: Callable[[str], None]) -> Iterator[Path]:
    """The run's folder, mode 0755 (Postfix's daemons reach their queue below it)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        if keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


class Postfix:
    """A Postfix instance of its own in ``folder``, on 127.0.0.1:``port``.

    ``settings`` are the main.cf lines of the script (routing, maps); files
    they name can be written to ``self.conf`` before the instance starts.
    """

    def __init__(self, folder: Path, port: int, hostname: str, settings: str) -> None:
        self.folder, self.port = folder, port
        self.conf = folder / "etc"
        self.log = folder / "postfix.log"
        self.started = False
        self.conf.mkdir(parents=True)
        (folder / "queue").mkdir()
        (folder / "data").mkdir()
        shutil.chown(folder / "data", "postfix")
        domain = hostname.split(".", 1)[1]
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(folder=folder, hostname=hostname, domain=domain) + settings
        )
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else "(no log)"

    def run(self, *args: str) -> None:
        # Postfix reports to its log, not to a stderr that is not a terminal.
        if subprocess.run([POSTFIX, "-c", str(self.conf), *args]).returncode != 0:
            raise SystemExit(f"postfix {' '.join(args)} failed; its log:\n{self.log_tail()}")

    def flush(self) -> None:
        """Ask for the queue to be delivered now (``postqueue -f``)."""
        subprocess.run(["postqueue", "-c", str(self.conf), "-f"], capture_output=True)

    def stop(self) -> None:
        if self.started:
            subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True)
            self.started = False

    def __enter__(self) -> Postfix:
        self.run("check")
        self.run("start")
        self.started = True
        if not wait_until(lambda: port_open(self.port), 20):
            self.stop()
            raise SystemExit(f"nothing listens on 127.0.0.1:{self.port} after 20 s")
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def listkit(workspace: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``listkit --workspace WORKSPACE ARGS`` in a subprocess, output captured."""
    return subprocess.run(
        [*LISTKIT, "--workspace", str(workspace), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


def listkit_or_exit(workspace: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The same; a failure ends the run with listkit's output."""
    result = listkit(workspace, *args, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"listkit {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result
