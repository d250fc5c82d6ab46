"""Benchmark: `listkit send` against raw aiosmtplib, both into Postfix's smtp-sink.

In the same run, against the same ``smtp-sink`` on loopback, with the same
number of SMTP connections:

- baseline: raw aiosmtplib sending N prebuilt messages of the size listkit
  builds (one recipient each, ``sendmail`` per message), nothing else;
- listkit: the real ``listkit send`` command sending the example offer
  (personalised text + HTML) to N subscribers, with everything it does:
  claims, durable phase marks before DATA, results, all in SQLite with
  ``synchronous=FULL``.

- listkit signed: the same send with DKIM signing on (a 2048-bit key made by
  ``listkit dkim keygen``), in the same rounds, against the unsigned send
  (goal: signed >= 0.5x unsigned).

Prints the rates and the ratios (goal: listkit >= 0.8x raw), then the peak RSS
of `listkit send` for a 10x larger audience against the N-recipient run
(goal: within 1.2x, under 200 MB).

Needs ``smtp-sink`` (Debian package ``postfix``); installs it when run as
root on Debian, after asking apt for nothing else.

    .venv/bin/python bench/send.py                      # 20,000 and 200,000
    .venv/bin/python bench/send.py --messages 2000 --memory-factor 5
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONNECTIONS = 8


def smtp_sink() -> str:
    found = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("smtp-sink is missing: install the Debian package postfix")
    print("installing postfix for smtp-sink ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True, env=env)
    subprocess.run(["postfix", "stop"], capture_output=True)  # we want the sink, not a daemon
    return "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen:
    cmd = [smtp_sink(), "-u", "nobody", f"127.0.0.1:{port}", "1024"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"smtp-sink did not start: {proc.stderr.read().decode()}")


def listkit(*args: str, workspace: Path) -> list[str]:
    return [sys.executable, "-m", "listkit", "--workspace", str(workspace), *args]


def make_workspace(root: Path, n: int, port: int, *, dkim: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ws = root / f"ws{n}{'-dkim' if dkim else ''}"
    subprocess.run(listkit("init", str(ws), workspace=ws), check=True, capture_output=True)
    env = (ws / ".env").read_text().replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    if dkim:
        subprocess.run(
            listkit("dkim", "keygen", "--selector", "bench", workspace=ws),
            check=True,
            capture_output=True,
        )
        env += "LISTKIT_DKIM_KEY=dkim-bench.pem\nLISTKIT_DKIM_SELECTOR=bench\n"
    (ws / ".env").write_text(env)
    subprocess.run(
        listkit("lists", "create", "bench", workspace=ws), check=True, capture_output=True
    )
    people = root / f"people{n}.csv"
    with people.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name"])
        for i in range(n):
            w.writerow([f"reader{i}@bench.example.com", f"Reader {i}"])
    subprocess.run(
        listkit("subscribers", "import", str(people), "--list", "bench", workspace=ws),
        check=True,
        capture_output=True,
    )
    (ws / "campaigns" / "bench.toml").write_text(
        f'offer = "launch"\nlists = ["bench"]\nconcurrency = {CONNECTIONS}\nrate = 0\n'
    )
    return ws


def run_listkit(ws: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        listkit("send", "bench", "--yes", workspace=ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"listkit send failed:\n{out}")
    return elapsed, usage.ru_maxrss * 1024, out


def sample_message(ws: Path, root: Path) -> bytes:
    out = root / "sample.eml"
    subprocess.run(
        listkit("offers", "preview", "launch", "--eml", str(out), workspace=ws),
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


async def raw_send(port: int, n: int, template: bytes) -> None:
    import aiosmtplib

    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait((f"reader{i}@bench.example.com", template))

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        while not queue.empty():
            rcpt, data = queue.get_nowait()
            errors, _response = await client.sendmail("hello@bench.example.com", [rcpt], data)
            assert not errors
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--memory-factor", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--raw", nargs=3, metavar=("PORT", "N", "EML"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        port, n, eml = int(args.raw[0]), int(args.raw[1]), Path(args.raw[2])
        start = time.perf_counter()
        asyncio.run(raw_send(port, n, eml.read_bytes()))
        print(time.perf_counter() - start)
        return
    n = args.messages
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="listkit-bench-send-") as tmp:
            root = Path(tmp)
            print(f"preparing workspaces ({n:,} and {n * args.memory_factor:,} subscribers) ...")
            # Raw and listkit runs alternate, a fresh workspace each round, and the
            # medians are compared: this machine's speed drifts between runs.
            raws, lks, signed = [], [], []
            for round_ in range(args.rounds):
                small = make_workspace(root / f"r{round_}", n, port)
                small_dkim = make_workspace(root / f"r{round_}", n, port, dkim=True)
                if round_ == 0:
                    template = sample_message(small, root)
                    eml = root / "raw.eml"
                    eml.write_bytes(template)
                raws.append(
                    float(
                        subprocess.run(
                            [sys.executable, __file__, "--raw", str(port), str(n), str(eml)],
                            check=True,
                            capture_output=True,
                            text=True,
                        ).stdout
                    )
                )
                lk_s, rss_small, out = run_listkit(small)
                lks.append(lk_s)
                signed_s, _rss, out_signed = run_listkit(small_dkim)
                signed.append(signed_s)
                print(
                    f"round {round_ + 1}: raw {raws[-1]:.2f}s, listkit {lk_s:.2f}s, "
                    f"listkit DKIM-signed {signed_s:.2f}s",
                    flush=True,
                )
            big = make_workspace(root, n * args.memory_factor, port)
            big_s, rss_big, out_big = run_listkit(big)
    finally:
        sink.terminate()
        sink.wait()
    raw_s, lk_s = statistics.median(raws), statistics.median(lks)
    signed_s = statistics.median(signed)
    print(f"message size about {len(template):,} bytes; {CONNECTIONS} connections; smtp-sink")
    print(f"listkit: {out}")
    print(f"{'(median of ' + str(args.rounds) + ' rounds)':34}{'seconds':>9}{'msgs/s':>10}")
    print(f"{'raw aiosmtplib, prebuilt':34}{raw_s:9.2f}{n / raw_s:10,.0f}")
    print(f"{'listkit send (render+MIME+SQLite)':34}{lk_s:9.2f}{n / lk_s:10,.0f}")
    print(f"{'listkit send, DKIM-signed':34}{signed_s:9.2f}{n / signed_s:10,.0f}")
    print(f"ratio listkit / raw: {raw_s / lk_s:.2f}x   (goal >= 0.8x)")
    print(f"ratio signed / unsigned: {lk_s / signed_s:.2f}x   (goal >= 0.5x)")
    print(f"listkit signed: {out_signed}")
    big_n = n * args.memory_factor
    print(
        f"peak RSS: {n:,} recipients {rss_small / 2**20:.0f} MB, "
        f"{big_n:,} recipients {rss_big / 2**20:.0f} MB "
        f"({rss_big / rss_small:.2f}x; goal <= 1.2x and < 200 MB); "
        f"{big_n:,} took {big_s:.1f}s ({big_n / big_s:,.0f} msgs/s)"
    )
    print(f"listkit ({big_n:,}): {out_big}")


if __name__ == "__main__":
    main()
