"""Benchmark: does the signup answer take the same time whoever the address is?

A real `listkit serve` process (uvicorn on loopback, behind no proxy but told
to believe this machine's X-Forwarded-For, so that every signup comes from a
client address of its own and the per-client limit stays out of the way),
confirmations mailed to Postfix's ``smtp-sink`` on loopback. Each run makes a
fresh workspace whose list has 200 active members, 200 pending and 200
unsubscribed, then POSTs one signup for each of them and for 200 strangers,
the four kinds shuffled together, one request at a time on one keep-alive
connection, timing each answer from the request's first byte to the
response's last. (A few signups of other strangers first warm the service
up; they are not counted.) The requests start at a steady pace (every 75 ms,
``--interval``), as signups come, rather than back to back. The service
answers a signup no sooner than ``web.pages.ANSWER_FLOOR`` (50 ms) after it
came; what the figures show is whether anything of the address shows beyond
that floor.

Each run prints the median answer time per kind, each kind's median as a
ratio of the strangers' (the baseline kind), and the largest difference
between two kinds' medians, which must stay under 0.5 ms; then what the
mailer did meanwhile (confirmations mailed and not) and the load average.
The machine is shared: the figures move with what else runs on it.

``--compare REF`` runs the listkit code of git revision REF (extracted into
a temporary folder) beside this tree's, run by run, to show what changed.

    .venv/bin/python bench/signup_timing.py
    .venv/bin/python bench/signup_timing.py --runs 3 --compare 865e307
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.send import free_port, listkit, start_sink
from bench.serve import code_env, extract

KINDS = ("stranger", "member", "pending", "unsubscribed")
GOAL_MS = 0.5
PERSON = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def make_workspace(root: Path, n: int, smtp_port: int, env: dict[str, str]) -> Path:
    """A workspace whose list `blog` has ``n`` members, ``n`` pending and ``n`` unsubscribed."""
    ws = root / "ws"

    def cli(*args: str) -> None:
        subprocess.run(
            listkit(*args, workspace=ws), check=True, capture_output=True, env=env, cwd=root
        )

    cli("init", str(ws))
    text = (
        (ws / ".env").read_text().replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{smtp_port}")
    )
    # Every stranger, pending and unsubscribed address is mailed: the most
    # work the mailer can do beside the answers.
    (ws / ".env").write_text(text + "LISTKIT_CONFIRM_PER_HOUR=100000\n")
    cli("lists", "create", "blog")
    people = root / "people.csv"
    with people.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name"])
        for kind in KINDS[1:]:
            for i in range(n):
                w.writerow([f"{kind}{i}@bench.example.com", f"Reader {i}"])
    cli("subscribers", "import", str(people), "--list", "blog")
    with sqlite3.connect(ws / "listkit.db") as db:
        for status in ("pending", "unsubscribed"):
            db.execute(
                """UPDATE memberships SET status = ? WHERE subscriber_id IN
                   (SELECT id FROM subscribers WHERE email LIKE ?)""",
                [status, f"{status}%"],
            )
    return ws


def start_serve(ws: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = listkit(
        "serve", "--port", str(port), "--forwarded-allow-ips", "127.0.0.1", "--quiet", workspace=ws
    )
    # From the workspace: `python -m` puts the current folder first on the
    # path, and from this repository it would run this tree's listkit, not REF's.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=(ws / "serve.log").open("wb"),
        env=env,
        cwd=ws,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (ws / "serve.log").read_text()
                raise SystemExit(f"listkit serve did not start:\n{log}") from None
            time.sleep(0.05)


def sign_up(conn: http.client.HTTPConnection, email: str, client: int) -> float:
    """POST one signup; the answer's time in milliseconds."""
    body = urlencode({"email": email, "name": "Reader"}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": PERSON,
        "X-Forwarded-For": f"10.{client >> 16 & 255}.{client >> 8 & 255}.{client & 255}",
    }
    start = time.perf_counter_ns()
    conn.request("POST", "/s/blog", body, headers)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if response.status != 200:
        raise SystemExit(f"signup of {email} answered {response.status}")
    return elapsed


def run(code: Path, n: int, warm: int, seed: int, interval: float) -> dict:
    env = code_env(code)
    with tempfile.TemporaryDirectory() as tmp:
        sink_port = free_port()
        sink = start_sink(sink_port)
        ws = make_workspace(Path(tmp), n, sink_port, env)
        proc, port = start_serve(ws, env)
        load_before = os.getloadavg()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            order = [("warm", i) for i in range(warm)]
            rest = [(kind, i) for kind in KINDS for i in range(n)]
            random.Random(seed).shuffle(rest)
            times: dict[str, list[float]] = {kind: [] for kind in ("warm", *KINDS)}
            start = time.monotonic()
            for client, (kind, i) in enumerate(order + rest, 1):
                # The next slot of the pace (or at once, if this one is late).
                time.sleep(max(0.0, start + client * interval - time.monotonic()))
                domain = "bench.example.com" if kind in KINDS[1:] else "bench.example.net"
                times[kind].append(sign_up(conn, f"{kind}{i}@{domain}", client))
            del times["warm"]
            conn.close()
            load_after = os.getloadavg()
            time.sleep(1)  # let the mailer finish what it has
            with sqlite3.connect(ws / "listkit.db") as db:
                states = dict(db.execute("SELECT state, COUNT(*) FROM signups GROUP BY state"))
        finally:
            proc.terminate()
            proc.wait(10)
            sink.terminate()
            sink.wait(10)
    medians = {kind: statistics.median(ts) for kind, ts in times.items()}
    return {
        "medians": medians,
        "p90": {kind: statistics.quantiles(ts, n=10)[-1] for kind, ts in times.items()},
        "spread": max(medians.values()) - min(medians.values()),
        "states": states,
        "load": (load_before[0], load_after[0]),
    }


def report(label: str, r: dict) -> None:
    base = r["medians"]["stranger"]
    print(f"{label}:")
    for kind in KINDS:
        m = r["medians"][kind]
        print(f"  {kind:<13} median {m:6.2f} ms  ({m / base:.3f}x)  p90 {r['p90'][kind]:6.2f} ms")
    verdict = "under" if r["spread"] < GOAL_MS else "NOT under"
    print(f"  largest difference between medians: {r['spread']:.3f} ms ({verdict} {GOAL_MS} ms)")
    states = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))
    print(f"  signups afterwards: {states}")
    print(f"  load average (1 min) {r['load'][0]:.2f} before, {r['load'][1]:.2f} after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=200, help="signups of each kind")
    parser.add_argument("--warm", type=int, default=30, help="uncounted signups first")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--interval", type=float, default=0.075, help="seconds between request starts"
    )
    parser.add_argument("--compare", metavar="REF", help="git revision to run beside this tree")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    print(
        f"{args.per_kind} signups of each kind per run, shuffled, one every "
        f"{args.interval * 1000:g} ms; machine: "
        f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.2f}); "
        "times are per answer, client side",
        flush=True,
    )
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        codes = [("this tree", here)]
        if args.compare:
            codes.insert(0, (args.compare, extract(args.compare, Path(tmp) / "ref")))
        for n in range(args.runs):
            for label, code in codes:
                r = run(code, args.per_kind, args.warm, seed=n, interval=args.interval)
                report(f"{label}, run {n + 1}", r)
                failed |= code == here and r["spread"] >= GOAL_MS
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
