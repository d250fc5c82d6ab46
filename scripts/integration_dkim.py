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

The Debian installation, the Postfix instance, free ports and the time limit
come from ``scripts/postfix_instance.py``, shared with
``scripts/integration_bounces.py``.

Exit status 0 when every message verified.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dkim as dkimpy
from aiosmtpd.controller import Controller
from postfix_instance import (
    ROOT,
    Postfix,
    free_port,
    install_packages,
    listkit_or_exit,
    postfix_missing,
    temporary_folder,
    time_limit,
)

sys.path.insert(0, str(ROOT))  # tests.dns_server: the loopback DNS server of the tests
DKIMVERIFY = Path(sys.executable).parent / "dkimverify"

# This instance relays everything to the capture server (the "next hop").
SETTINGS = """\
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{next_hop}
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""


def log(message: str) -> None:
    print(f"integration-dkim: {message}", flush=True)


class Capture:
    """The next hop: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, envelope.original_content or envelope.content))
        return "250 2.0.0 captured"


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


def main() -> int:
    time_limit("integration-dkim")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it installs and starts Postfix (make integration-dkim)")
    install_packages(postfix_missing(), log)
    capture = Capture()
    next_hop, listen = free_port(), free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=next_hop)
    controller.start()
    try:
        with (
            temporary_folder("listkit-integration-dkim-", args.keep, log) as tmp,
            Postfix(
                tmp / "postfix",
                listen,
                "relay.listkit-integration.example",
                SETTINGS.format(next_hop=next_hop),
            ) as postfix,
        ):
            log(
                f"postfix (-c {postfix.conf}) on 127.0.0.1:{listen}, "
                f"relaying to 127.0.0.1:{next_hop}"
            )
            return send_and_verify(args, tmp, postfix, capture)
    finally:
        controller.stop()


def send_and_verify(args: argparse.Namespace, tmp: Path, postfix: Postfix, capture: Capture) -> int:
    """Send the campaign through ``postfix`` and verify what reaches ``capture``."""
    ws = tmp / "ws"
    listkit_or_exit(ws, "init", str(ws))
    new = listkit_or_exit(ws, "dkim", "keygen", "--selector", "integration", "--json").stdout
    key = json.loads(new)
    env = (
        (ws / ".env")
        .read_text()
        .replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{postfix.port}")
    )
    env += "LISTKIT_DKIM_KEY=dkim-integration.pem\nLISTKIT_DKIM_SELECTOR=integration\n"
    (ws / ".env").write_text(env)
    listkit_or_exit(ws, "lists", "create", "blog")
    people = tmp / "people.csv"
    people.write_text(
        "email,name\n"
        + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(args.messages))
    )
    listkit_or_exit(ws, "subscribers", "import", str(people), "--list", "blog")
    (ws / "campaigns" / "integration.toml").write_text(
        'offer = "launch"\nlists = ["blog"]\nconcurrency = 2\n'
    )
    log(listkit_or_exit(ws, "send", "integration", "--yes").stdout.strip())

    deadline = time.monotonic() + 60
    while len(capture.messages) < args.messages and time.monotonic() < deadline:
        postfix.flush()
        time.sleep(0.5)
    if len(capture.messages) < args.messages:
        tail = postfix.log_tail(3000)
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


if __name__ == "__main__":
    sys.exit(main())
