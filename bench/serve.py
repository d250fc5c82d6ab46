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
its rate alone (goal >= 0.7x). Goals assume a 2-core machine to itself.

    .venv/bin/python bench/serve.py
    .venv/bin/python bench/serve.py --messages 2000 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
    from listkit.db import now
    from listkit.tracking import click_url, link_id, new_token, unsubscribe_url
    from listkit.workspace import Workspace

    w = Workspace(ws)
    db, secret = w.db, w.settings.secret_key()
    stamp, sent = now(), "2026-01-01T00:00:00+00:00"
    tokens = [new_token() for _ in range(n)]
    with db.conn:
        lid = db.execute(
            "INSERT INTO lists (slug, title, created) VALUES ('readers', 'Readers', ?)", [stamp]
        ).lastrowid
        cid = db.execute(
            """INSERT INTO campaigns (slug, offer, lists, state, created, started)
               VALUES ('past', 'launch', '["readers"]', 'done', ?, ?)""",
            [stamp, sent],
        ).lastrowid
        for i, token in enumerate(tokens):
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
            db.execute(
                """INSERT INTO deliveries (campaign_id, subscriber_id, list_id, email, token,
                   state, created, sent_at) VALUES (?, ?, ?, ?, ?, 'sent', ?, ?)""",
                [cid, sid, lid, email, token, stamp, sent],
            )
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
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    Path(args.out).write_text(json.dumps({"elapsed": elapsed, "results": results}))


# --- the run ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def send(ws: Path, slug: str) -> float:
    started = time.perf_counter()
    subprocess.run(listkit("send", slug, "--yes", workspace=ws), check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--targets", type=int, default=60_000, help="deliveries to unsubscribe")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--target-file", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.load:
        load_main(parser.parse_args())
        return

    sink_port, port = free_port(), free_port()
    sink = start_sink(sink_port)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"setting up: {args.messages:,} subscribers, {args.targets:,} earlier deliveries")
        ws = make_workspace(root, args.messages, sink_port)
        (ws / "campaigns" / "bench2.toml").write_text((ws / "campaigns" / "bench.toml").read_text())
        unsubs, clicks = prepare_targets(ws, args.targets)
        targets = root / "targets.json"
        targets.write_text(json.dumps({"unsubscribe": unsubs, "click": clicks}))
        server = subprocess.Popen(
            [*listkit("serve", "--port", str(port), "--quiet", workspace=ws)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            alone = send(ws, "bench")
            print(f"send alone: {args.messages:,} messages in {alone:.2f} s")
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
            loaded = send(ws, "bench2")
            stop.touch()
            if load.wait() != 0:
                raise SystemExit("the load generator failed")
        finally:
            server.terminate()
            server.wait(10)
            sink.terminate()
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
    bad = len(results) - ok_unsub - ok_click
    latencies = [r[2] * 1000 for r in results]
    rate = len(results) / data["elapsed"]
    print(
        f"load: {args.clients} clients, {len(results):,} requests in {data['elapsed']:.2f} s: "
        f"{rate:,.0f} requests/s (goal >= 1,500)"
    )
    print(
        "answers: "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items()))
        + f"; not as expected: {bad} (goal 0)"
    )
    print(
        f"latency: p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
        f", max {max(latencies):.1f} ms (goal p99 < 100 ms)"
    )
    clicks_recorded = events.get("click", 0) + events.get("click_bot", 0)
    once = events.get("unsubscribe", 0) == ok_unsub and clicks_recorded == ok_click
    print(
        f"events: unsubscribe {events.get('unsubscribe', 0):,} for {ok_unsub:,} answered "
        f"one-click POSTs, click {clicks_recorded:,} for {ok_click:,} answered clicks "
        f"(exactly once: {once})"
    )
    print(
        f"send under load: {loaded:.2f} s vs {alone:.2f} s alone: {alone / loaded:.2f}x its speed "
        "(goal >= 0.7x)"
    )
    print(f"machine: {os.cpu_count()} cores, shared; figures are noisy")


if __name__ == "__main__":
    main()
