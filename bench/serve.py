"""Benchmark: `listkit serve` under one-click unsubscribes and clicks while a send runs.

In one run, on one workspace (one SQLite database), against Postfix's
``smtp-sink`` on loopback:

1. baseline: `listkit send` of a 20,000-message campaign, nothing else running;
2. the same size of send (a second campaign to the same list) while a load
   generator, a separate process with ``--clients`` (64) concurrent HTTP/1.1
   keep-alive connections, POSTs RFC 8058 one-click unsubscribes (each to a
   different delivery of an earlier campaign) and GETs tracked links, as fast
   as the service answers, until the send ends (bounded by the number of
   prepared requests).

Prints requests per second, the status counts (goal: every answer 2xx or, for
a click, its 302), p50/p99 latency (goal p99 < 100 ms), whether each answered
request left exactly one event row, and the send's rate under load against
its rate alone (goal >= 0.7x), and the CPU seconds the service, the load
generator and the send used (and the send and smtp-sink alone): on 2 cores
they share, the figures move with what else runs. Goals assume a 2-core
machine to itself.

``--compare REF`` measures side by side in the same run: rounds alternate
between the listkit code of git revision REF (extracted into a temporary
folder) and the working tree's, each on a fresh workspace, ``--rounds`` of
each; every round is printed, then the medians.

    .venv/bin/python bench/serve.py
    .venv/bin/python bench/serve.py --messages 2000 --clients 16
    .venv/bin/python bench/serve.py --compare main --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.send import free_port, listkit, make_workspace, start_sink

PERSON = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def prepare_targets(ws: Path, n: int) -> tuple[list[str], list[str]]:
    """An earlier campaign with ``n`` sent deliveries; (unsubscribe paths, click paths)."""
    from listkit.db import now, unix
    from listkit.mail.tracking import click_url, delivery_token, link_id, unsubscribe_url
    from listkit.workspace import Workspace

    w = Workspace(ws)
    db, secret = w.db, w.settings.secret_key()
    stamp, sent = now(), "2026-01-01T00:00:00+00:00"
    tokens = []
    with db.conn:
        lid = db.execute(
            "INSERT INTO lists (slug, title, created) VALUES ('readers', 'Readers', ?)", [stamp]
        ).lastrowid
        cid = db.execute(
            """INSERT INTO campaigns (slug, offer, lists, state, created, started)
               VALUES ('past', 'launch', '["readers"]', 'done', ?, ?)""",
            [stamp, sent],
        ).lastrowid
        for i in range(n):
            email = f"old{i}@bench.example.com"
            sid = db.execute(
                "INSERT INTO subscribers (email, key, created) VALUES (?, ?, ?)",
                [email, email, stamp],
            ).lastrowid
            db.execute(
                "INSERT INTO memberships (list_id, subscriber_id, status, created) "
                "VALUES (?, ?, 'active', ?)",
                [lid, sid, stamp],
            )
            did = db.execute(
                """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, state, sent_unix)
                   VALUES (?, ?, ?, 'sent', ?)""",
                [cid, sid, lid, unix(sent)],
            ).lastrowid
            tokens.append(delivery_token(secret, did))
    w.close()
    link = link_id("https://shop.example.com/l/field-guide")
    unsubs = [unsubscribe_url("", secret, t) for t in tokens]
    clicks = [click_url("", secret, t, link) for t in tokens]
    return unsubs, clicks


# --- the load generator (a process of its own) -----------------------------------------


async def _client(port, queue, stop: Path, results, deadline):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"List-Unsubscribe=One-Click"
    try:
        while queue and not stop.exists() and time.monotonic() < deadline:
            kind, path = queue.pop()
            if kind == "u":
                request = (
                    f"POST {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {PERSON}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
            else:
                request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {PERSON}\r\n\r\n"
                request = request.encode()
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latency = time.perf_counter() - started
            status = int(status_line.split()[1]) if status_line else 0
            results.append((kind, status, latency))
    finally:
        writer.close()


def load_main(args) -> None:
    targets = json.loads(Path(args.target_file).read_text())
    queue = [("u", p) for p in targets["unsubscribe"]] + [("c", p) for p in targets["click"]]
    random.Random(1).shuffle(queue)
    results: list = []
    stop = Path(args.stop)

    async def run():
        deadline = time.monotonic() + args.max_seconds
        await asyncio.gather(
            *(_client(args.port, queue, stop, results, deadline) for _ in range(args.clients))
        )

    started = time.perf_counter()
    try:  # the lighter event loop leaves more of the machine to the service and the send
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(args.out).write_text(
        json.dumps({"elapsed": elapsed, "results": results, "cpu": usage.ru_utime + usage.ru_stime})
    )


# --- the run ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def send(ws: Path, slug: str, code: Path) -> tuple[float, float]:
    """Run `listkit send`; (seconds, CPU seconds of it and its rendering processes)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        listkit("send", slug, "--yes", workspace=ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=code,
        env=code_env(code),
    )
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"listkit send failed:\n{out.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def code_env(code: Path) -> dict[str, str]:
    """The environment that runs ``python -m listkit`` from the listkit code in ``code``."""
    return {**os.environ, "PYTHONPATH": str(code)}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(args, root: Path, code: Path) -> dict:
    """One measurement on a fresh workspace with the listkit code in ``code``."""
    sink_port, port = free_port(), free_port()
    sink = start_sink(sink_port)
    root.mkdir(parents=True)
    ws = make_workspace(root, args.messages, sink_port)
    (ws / "campaigns" / "bench2.toml").write_text((ws / "campaigns" / "bench.toml").read_text())
    unsubs, clicks = prepare_targets(ws, args.targets)
    targets = root / "targets.json"
    targets.write_text(json.dumps({"unsubscribe": unsubs, "click": clicks}))
    server = subprocess.Popen(
        [*listkit("serve", "--port", str(port), "--quiet", workspace=ws)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=code,
        env=code_env(code),
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        sink_cpu = cpu_seconds(sink.pid)
        alone, alone_cpu = send(ws, "bench", code)
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu
        stop, out = root / "stop", root / "load.json"
        load = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--load",
                "--port",
                str(port),
                "--stop",
                str(stop),
                "--out",
                str(out),
                "--target-file",
                str(targets),
                "--clients",
                str(args.clients),
                "--max-seconds",
                str(args.max_seconds),
            ]
        )
        time.sleep(0.5)  # the load is running before the send starts
        server_cpu = cpu_seconds(server.pid)
        loaded, loaded_cpu = send(ws, "bench2", code)
        stop.touch()
        if load.wait() != 0:
            raise SystemExit("the load generator failed")
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        server.terminate()
        server.wait(10)
        sink.terminate()
        sink.wait(10)
    data = json.loads(out.read_text())
    results = data["results"]
    from listkit.workspace import Workspace

    w = Workspace(ws)
    events = dict(w.db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    w.close()
    statuses: dict[str, int] = {}
    for kind, status, _ in results:
        key = f"{'unsubscribe' if kind == 'u' else 'click'} {status}"
        statuses[key] = statuses.get(key, 0) + 1
    ok_unsub = statuses.get("unsubscribe 200", 0)
    ok_click = statuses.get("click 302", 0)
    latencies = [r[2] * 1000 for r in results]
    clicks_recorded = events.get("click", 0) + events.get("click_bot", 0)
    return {
        "requests": len(results),
        "elapsed": data["elapsed"],
        "rate": len(results) / data["elapsed"],
        "statuses": statuses,
        "bad": len(results) - ok_unsub - ok_click,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "unsub_events": events.get("unsubscribe", 0),
        "ok_unsub": ok_unsub,
        "click_events": clicks_recorded,
        "ok_click": ok_click,
        "once": events.get("unsubscribe", 0) == ok_unsub and clicks_recorded == ok_click,
        "alone": alone,
        "loaded": loaded,
        "ratio": alone / loaded,
        "server_cpu": server_cpu,
        "load_cpu": data["cpu"],
        "alone_cpu": alone_cpu,
        "loaded_cpu": loaded_cpu,
        "sink_cpu_alone": sink_cpu,
    }


def report(label: str, r: dict, clients: int) -> None:
    print(
        f"[{label}] load: {clients} clients, {r['requests']:,} requests in "
        f"{r['elapsed']:.2f} s: {r['rate']:,.0f} requests/s (goal >= 1,500)"
    )
    print(
        f"[{label}] answers: "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items()))
        + f"; not as expected: {r['bad']} (goal 0)"
    )
    print(
        f"[{label}] latency: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms (goal p99 < 100 ms)"
    )
    print(
        f"[{label}] events: unsubscribe {r['unsub_events']:,} for {r['ok_unsub']:,} answered "
        f"one-click POSTs, click {r['click_events']:,} for {r['ok_click']:,} answered clicks "
        f"(exactly once: {r['once']})"
    )
    print(
        f"[{label}] send under load: {r['loaded']:.2f} s vs {r['alone']:.2f} s alone: "
        f"{r['ratio']:.2f}x its speed (goal >= 0.7x)"
    )
    print(
        f"[{label}] CPU during the loaded send: service {r['server_cpu']:.1f} s, "
        f"load generator {r['load_cpu']:.1f} s, the send {r['loaded_cpu']:.1f} s "
        f"(alone: the send {r['alone_cpu']:.1f} s, smtp-sink {r['sink_cpu_alone']:.1f} s)",
        flush=True,
    )


def extract(ref: str, into: Path) -> Path:
    """The listkit package of git revision ``ref``, with its example offers and
    campaigns (which `listkit init` copies), extracted into ``into``."""
    repo = Path(__file__).resolve().parent.parent
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "listkit", "offers", "campaigns"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--targets", type=int, default=60_000, help="deliveries to unsubscribe")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--compare", metavar="REF", help="git revision to measure side by side")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each code")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--target-file", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.load:
        load_main(parser.parse_args())
        return

    here = Path(__file__).resolve().parent.parent
    print(
        f"each round: {args.messages:,} subscribers, {args.targets:,} earlier deliveries; "
        f"machine: {os.cpu_count()} cores, shared; figures are noisy",
        flush=True,
    )
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        codes = [("this tree", here)]
        if args.compare:
            codes.insert(0, (args.compare, extract(args.compare, Path(tmp) / "ref")))
        for n in range(args.rounds):
            for label, code in codes:
                r = run_round(
                    args, Path(tmp) / f"round{n}-{len(runs.get(label, []))}-{id(code)}", code
                )
                runs.setdefault(label, []).append(r)
                report(f"{label} #{n + 1}", r, args.clients)
    if args.rounds > 1 or args.compare:
        print("medians:")
        for label, rs in runs.items():
            med = {
                k: statistics.median(r[k] for r in rs)
                for k in ("rate", "p50", "p95", "p99", "ratio", "server_cpu", "load_cpu")
            }
            print(
                f"  {label}: {med['rate']:,.0f} requests/s, p50 {med['p50']:.1f} ms, "
                f"p95 {med['p95']:.1f} ms, p99 {med['p99']:.1f} ms, send {med['ratio']:.2f}x, "
                f"not as expected {sum(r['bad'] for r in rs)}, "
                f"exactly once {all(r['once'] for r in rs)}; CPU service "
                f"{med['server_cpu']:.1f} s, load {med['load_cpu']:.1f} s ({len(rs)} rounds)"
            )


if __name__ == "__main__":
    main()
