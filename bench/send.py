"""Benchmark: `listkit send` against raw aiosmtplib, both into Postfix's smtp-sink.

In the same run, against the same ``smtp-sink`` on loopback, with the same
number of SMTP connections, rounds alternating (this machine's speed drifts):

- baseline: raw aiosmtplib sending N prebuilt messages of the size listkit
  builds (one recipient each, ``sendmail`` per message), nothing else;
- listkit unsigned: the real ``listkit send`` command sending the example
  offer (personalised text + HTML) to N subscribers, with everything it does:
  claims, durable phase marks before DATA, results, all in SQLite with
  ``synchronous=FULL``;
- listkit signed: the same send with DKIM signing on (a 2048-bit key made by
  ``listkit dkim keygen``);

each listkit send with the render processes forced to 1 and to 2
(LISTKIT_RENDER_WORKERS; ``--workers``). Prints the rates and the ratios
signed/unsigned (goal >= 0.8x), signed/raw (goal >= 0.6x) and unsigned/raw
(goal >= 1.0x), then the peak RSS of a signed send to a 10x larger audience
against the N-recipient one (goal: within 1.2x, under 200 MB), and the load
of the machine before and after (``uptime``): the ratios are what counts.

Needs ``smtp-sink`` (Debian package ``postfix``); installs it when run as
root on Debian, after asking apt for nothing else.

    .venv/bin/python bench/send.py                      # 20,000 and 200,000
    .venv/bin/python bench/send.py --messages 2000 --memory-factor 5 --workers 1,2
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


def make_workspace(root: Path, n: int, port: int) -> Path:
    """A workspace with ``n`` subscribers and the bench campaign, and a DKIM key
    that ``SIGNED`` turns on; copied afresh for each send."""
    root.mkdir(parents=True, exist_ok=True)
    ws = root / f"ws{n}"
    subprocess.run(listkit("init", str(ws), workspace=ws), check=True, capture_output=True)
    env = (ws / ".env").read_text().replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{port}")
    (ws / ".env").write_text(env)
    subprocess.run(
        listkit("dkim", "keygen", "--selector", "bench", workspace=ws),
        check=True,
        capture_output=True,
    )
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


# The settings that turn signing on in a workspace made by make_workspace.
SIGNED = {"LISTKIT_DKIM_KEY": "dkim-bench.pem", "LISTKIT_DKIM_SELECTOR": "bench"}


def run_listkit(pristine: Path, settings: dict[str, str]) -> tuple[float, float, int, str]:
    """Send the bench campaign of a fresh copy of ``pristine`` with ``settings``:
    (seconds, CPU seconds and peak RSS of the send and its render processes,
    its summary)."""
    ws = pristine.with_name(pristine.name + "-run")
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(pristine, ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        listkit("send", "bench", "--yes", workspace=ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, **settings},
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().strip()
    shutil.rmtree(ws, ignore_errors=True)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"listkit send failed:\n{out}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out


def run_raw(port: int, n: int, eml: Path) -> tuple[float, float]:
    """The raw aiosmtplib send in a process of its own: (seconds, CPU seconds)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--raw", str(port), str(n), str(eml)],
        stdout=subprocess.PIPE,
        text=True,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the raw aiosmtplib send failed")
    return float(proc.stdout.read()), usage.ru_utime + usage.ru_stime


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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--memory-factor", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="render processes to force, e.g. 1,2")
    parser.add_argument("--raw", nargs=3, metavar=("PORT", "N", "EML"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        port, n, eml = int(args.raw[0]), int(args.raw[1]), Path(args.raw[2])
        start = time.perf_counter()
        asyncio.run(raw_send(port, n, eml.read_bytes()))
        print(time.perf_counter() - start)
        return
    n = args.messages
    workers = [int(w) for w in args.workers.split(",")]
    kinds = [(f"unsigned, {w} render", {"LISTKIT_RENDER_WORKERS": str(w)}) for w in workers]
    kinds += [
        (f"signed, {w} render", {**SIGNED, "LISTKIT_RENDER_WORKERS": str(w)}) for w in workers
    ]
    load_before = uptime()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="listkit-bench-send-") as tmp:
            root = Path(tmp)
            print(f"preparing workspaces ({n:,} and {n * args.memory_factor:,} subscribers) ...")
            small = make_workspace(root / "small", n, port)
            template = sample_message(small, root)
            eml = root / "raw.eml"
            eml.write_bytes(template)
            # Raw and listkit runs alternate, each send on a fresh copy of the
            # workspace, and the medians are compared.
            seconds: dict[str, list[float]] = {"raw": []}
            cpu: dict[str, list[float]] = {"raw": []}
            rss: dict[str, list[int]] = {}
            outs: dict[str, str] = {}
            for round_ in range(args.rounds):
                took, used = run_raw(port, n, eml)
                seconds["raw"].append(took)
                cpu["raw"].append(used)
                for name, settings in kinds:
                    took, used, peak, outs[name] = run_listkit(small, settings)
                    seconds.setdefault(name, []).append(took)
                    cpu.setdefault(name, []).append(used)
                    rss.setdefault(name, []).append(peak)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{name} {s[-1]:.2f}s" for name, s in seconds.items()),
                    flush=True,
                )
            big_kind, big_settings = kinds[-1]
            big = make_workspace(root / "big", n * args.memory_factor, port)
            big_s, _cpu, rss_big, out_big = run_listkit(big, big_settings)
    finally:
        sink.terminate()
        sink.wait()
    med = {name: statistics.median(s) for name, s in seconds.items()}
    rate = {name: n / s for name, s in med.items()}
    print(f"message size about {len(template):,} bytes; {CONNECTIONS} connections; smtp-sink")
    print(f"load before: {load_before}")
    print(f"load after:  {uptime()}")
    # CPU time (every process of the send, smtp-sink aside) hardly depends on what
    # else the machine runs; on a quiet 2-core machine it bounds the rate.
    cpu_ms = {name: statistics.median(c) * 1000 / n for name, c in cpu.items()}
    print(
        f"{'(median of ' + str(args.rounds) + ' rounds)':34}{'seconds':>9}{'msgs/s':>10}"
        f"{'CPU ms/msg':>12}"
    )
    print(
        f"{'raw aiosmtplib, prebuilt unsigned':34}{med['raw']:9.2f}{rate['raw']:10,.0f}"
        f"{cpu_ms['raw']:12.3f}"
    )
    for name, _settings in kinds:
        print(
            f"{'listkit send, ' + name:34}{med[name]:9.2f}{rate[name]:10,.0f}{cpu_ms[name]:12.3f}"
        )
    for w in workers:
        unsigned, signed = rate[f"unsigned, {w} render"], rate[f"signed, {w} render"]
        print(
            f"{w} render process{'es' if w > 1 else ''}: "
            f"signed/unsigned {signed / unsigned:.2f}x (goal >= 0.8x), "
            f"signed/raw {signed / rate['raw']:.2f}x (goal >= 0.6x), "
            f"unsigned/raw {unsigned / rate['raw']:.2f}x (goal >= 1.0x)"
        )
    for name, _settings in kinds:
        print(f"listkit {name}: {outs[name]}")
    big_n = n * args.memory_factor
    small_rss = statistics.median(rss[big_kind])
    print(
        f"peak RSS, {big_kind}: {n:,} recipients {small_rss / 2**20:.0f} MB, "
        f"{big_n:,} recipients {rss_big / 2**20:.0f} MB "
        f"({rss_big / small_rss:.2f}x; goal <= 1.2x and < 200 MB); "
        f"{big_n:,} took {big_s:.1f}s ({big_n / big_s:,.0f} msgs/s)"
    )
    print(f"listkit ({big_n:,}): {out_big}")


if __name__ == "__main__":
    main()
