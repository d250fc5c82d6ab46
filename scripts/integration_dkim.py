"""Integration: a DKIM-signed campaign through a real Postfix still verifies.

    sudo .venv/bin/python scripts/integration_dkim.py [--messages 20]   (or: make integration-dkim)

Needs root (apt-get, and Postfix's master runs as root). What it does:

1. installs Debian's ``postfix`` if it is missing (and nothing else);
2. starts a capture SMTP server (aiosmtpd) on a loopback port: the "next hop";
3. starts its own Postfix instance with its own configuration directory
   (``postfix -c DIR``), queue and data directories, all in a temporary
   folder, listening on another loopback port and relaying everything to the
   capture server; the system's /etc/postfix and any running Postfix are
   left alone;
4. makes a listkit workspace with a DKIM key (``listkit dkim keygen``),
   sends a campaign into that Postfix with ``listkit send``;
5. verifies every message the capture server received with dkimpy's
   verifier (the library behind ``dkimverify``), the published key served
   from the record keygen printed; checks each went through Postfix (its
   Received header) and that a copy changed by one byte fails;
6. runs dkimpy's own ``dkimverify`` command on every message too, the way a
   receiver would: it reads the key from DNS through dnspython, which asks
   the servers of /etc/resolv.conf on port 53. So the record is served by a
   DNS server on loopback (tests/dns_server.py) at 127.0.53.1:53 (or the next
   free 127.0.53.x), and each ``dkimverify`` runs in a private mount namespace
   (``unshare --mount``) where a resolv.conf naming that server is bind-mounted
   over /etc/resolv.conf; the machine's own resolv.conf is never changed. A
   changed copy must make ``dkimverify`` exit 1;
7. stops Postfix, the DNS server and the capture server, whatever happened.

Exit status 0 when every message verified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dkim as dkimpy
from aiosmtpd.controller import Controller

POSTFIX = "/usr/sbin/postfix"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.dns_server: the loopback DNS server of the tests
DKIMVERIFY = Path(sys.executable).parent / "dkimverify"

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
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.listkit-integration.example
mydomain = listkit-integration.example
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{next_hop}
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""


def log(message: str) -> None:
    print(f"integration-dkim: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


def ensure_postfix() -> None:
    if Path(POSTFIX).exists():
        return
    if not shutil.which("apt-get"):
        raise SystemExit("postfix is missing and apt-get is not available: install postfix")
    log("installing postfix (Debian package) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # No system Postfix may start (it would outlive the run): policy-rc.d says no to
    # every invoke-rc.d during the installation; only a policy we wrote is removed.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(
            ["debconf-set-selections"],
            input="postfix postfix/main_mailer_type select No configuration\n",
            text=True,
            check=False,
            env=env,
        )
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
            check=True,
            env=env,
        )
    finally:
        if ours:
            policy.unlink()


class Capture:
    """The next hop: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, envelope.original_content or envelope.content))
        return "250 2.0.0 captured"


def listkit(workspace: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "listkit", "--workspace", str(workspace), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"listkit {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def dns_on_port_53(zones: dict):
    """The loopback DNS server on port 53 of the first free 127.0.53.x."""
    from tests.dns_server import DNSServer

    for last in range(1, 20):
        try:
            return DNSServer(zones, host=f"127.0.53.{last}", port=53)
        except OSError:
            continue
    raise SystemExit("no free 127.0.53.x:53 for the DNS server dkimverify asks")


def dkimverify(message: bytes, resolv_conf: Path) -> subprocess.CompletedProcess:
    """dkimpy's `dkimverify` command, its DNS pointed at our server in a private mount
    namespace (a bind mount over /etc/resolv.conf that only this process sees)."""
    script = 'mount --bind "$1" /etc/resolv.conf && exec "$2"'
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(resolv_conf), str(DKIMVERIFY)],
        input=message,
        capture_output=True,
        timeout=60,
    )


LIMIT = 180  # seconds: a run that takes longer stops, and still cleans up


def _stop(signum, _frame) -> None:
    # SystemExit unwinds through main's finally: Postfix stopped, the folder removed.
    why = f"took longer than {LIMIT} s" if signum == signal.SIGALRM else "terminated"
    raise SystemExit(f"integration-dkim: stopped: {why}")


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGALRM, _stop)
    signal.alarm(LIMIT)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it installs and starts Postfix (make integration-dkim)")
    ensure_postfix()
    tmp = Path(tempfile.mkdtemp(prefix="listkit-integration-dkim-"))
    os.chmod(tmp, 0o755)  # Postfix's daemons (user postfix) reach their queue below it
    capture = Capture()
    next_hop, listen = free_port(), free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=next_hop)
    controller.start()
    conf = tmp / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(MAIN_CF.format(root=tmp, next_hop=next_hop))
    (conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{listen}"))
    (tmp / "spool").mkdir()
    (tmp / "data").mkdir()
    shutil.chown(tmp / "data", "postfix")
    maillog = tmp / "postfix.log"

    def postfix(*args: str) -> None:
        # Postfix reports to its log, not to a stderr that is not a terminal.
        if subprocess.run([POSTFIX, "-c", str(conf), *args]).returncode != 0:
            tail = maillog.read_text()[-2000:] if maillog.exists() else "(no log)"
            raise SystemExit(f"postfix {' '.join(args)} failed; its log:\n{tail}")

    postfix_started = False
    try:
        postfix("check")
        postfix("start")
        postfix_started = True
        wait_for_port(listen)
        log(f"postfix (-c {conf}) on 127.0.0.1:{listen}, relaying to 127.0.0.1:{next_hop}")

        ws = tmp / "ws"
        listkit(ws, "init", str(ws))
        new = listkit(ws, "dkim", "keygen", "--selector", "integration", "--json").stdout
        key = json.loads(new)
        env = (
            (ws / ".env").read_text().replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{listen}")
        )
        env += "LISTKIT_DKIM_KEY=dkim-integration.pem\nLISTKIT_DKIM_SELECTOR=integration\n"
        (ws / ".env").write_text(env)
        listkit(ws, "lists", "create", "blog")
        people = tmp / "people.csv"
        people.write_text(
            "email,name\n"
            + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(args.messages))
        )
        listkit(ws, "subscribers", "import", str(people), "--list", "blog")
        (ws / "campaigns" / "integration.toml").write_text(
            'offer = "launch"\nlists = ["blog"]\nconcurrency = 2\n'
        )
        log(listkit(ws, "send", "integration", "--yes").stdout.strip())

        deadline = time.monotonic() + 60
        while len(capture.messages) < args.messages and time.monotonic() < deadline:
            subprocess.run(["postqueue", "-c", str(conf), "-f"], capture_output=True)
            time.sleep(0.5)
        if len(capture.messages) < args.messages:
            tail = maillog.read_text()[-3000:] if maillog.exists() else "(no log)"
            raise SystemExit(
                f"only {len(capture.messages)} of {args.messages} messages came through "
                f"Postfix in 60 s; its log:\n{tail}"
            )

        dns = {f"{key['record_name']}.".encode(): key["record_value"].encode()}

        def lookup(name, timeout=5):
            return dns.get(name)

        failed = []
        for rcpt, data in capture.messages:
            if b"by relay.listkit-integration.example (Postfix)" not in data:
                failed.append(f"{rcpt}: no Received header from Postfix")
            elif not dkimpy.verify(data, dnsfunc=lookup):
                failed.append(f"{rcpt}: signature does not verify")
        sample = capture.messages[0][1]
        tampered = sample.replace(b"Reader", b"Raeder", 1)
        if tampered == sample or dkimpy.verify(tampered, dnsfunc=lookup):
            failed.append("a message changed after signing still verified")

        # The `dkimverify` command, reading the published key from DNS.
        from tests.dns_server import txt

        probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise SystemExit(
                "integration-dkim: `unshare --mount` is refused here (it needs root with "
                f"CAP_SYS_ADMIN): {probe.stderr.strip()}; dkimverify cannot be pointed at "
                "the loopback DNS server without changing the machine's /etc/resolv.conf"
            )
        zones = {f"{key['record_name']}.": [txt(key["record_value"])]}
        server = dns_on_port_53(zones)
        resolv_conf = tmp / "resolv.conf"
        resolv_conf.write_text(f"nameserver {server.host}\n")
        with server:
            for rcpt, data in capture.messages:
                r = dkimverify(data, resolv_conf)
                if r.returncode != 0 or r.stdout.strip() != b"signature ok":
                    failed.append(f"{rcpt}: dkimverify says {(r.stdout + r.stderr).strip()!r}")
            r = dkimverify(tampered, resolv_conf)
            if r.returncode != 1 or b"signature verification failed" not in r.stdout:
                failed.append(f"dkimverify accepted a changed copy: {r.stdout + r.stderr!r}")
        asked = {name for name, kind in server.queries if kind == "TXT"}
        if f"{key['record_name']}." not in asked:
            failed.append(f"dkimverify never asked the loopback DNS server ({server.queries})")
        if failed:
            for line in failed:
                log(f"FAIL {line}")
            return 1
        log(
            f"{len(capture.messages)} messages went through Postfix and verify "
            f"(d={key['domain']}, s={key['selector']}), with dkimpy's library and with its "
            f"dkimverify command reading the key from DNS ({server.address}); "
            "a changed copy fails both"
        )
        return 0
    finally:
        if postfix_started:
            subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True)
        controller.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
