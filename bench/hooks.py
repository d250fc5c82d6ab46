"""Benchmark: signed Stripe webhooks recorded by a real `listkit serve`, against /healthz.

Starts `listkit serve` on a fresh workspace and, in the same run, over the same
keep-alive connections from ``--clients`` threads:

- baseline: ``GET /healthz`` (HTTP, routing, one database read, no write);
- listkit: ``POST /hooks/stripe`` with a signed ``checkout.session.completed``
  for a new order each time (signature check, parsing, the upsert, attribution
  and a commit before the answer; concurrent requests share a commit).

Prints requests per second for each and the ratio. Every answer is checked
(200 and "Sale recorded."), and the sales are counted afterwards.

    .venv/bin/python bench/hooks.py [--requests 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from listkit.workspace import init_workspace

SECRET = "whsec_bench_0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(n: int) -> bytes:
    session = {"object": "checkout.session", "id": f"cs_{n}", "payment_intent": f"pi_{n}",
               "customer_details": {"email": f"b{n}@example.com"}, "amount_total": 2900,
               "currency": "usd", "payment_status": "paid", "metadata": {}}  # fmt: skip
    body = {"object": "event", "type": "checkout.session.completed", "livemode": True,
            "created": 1794000000, "data": {"object": session}}  # fmt: skip
    return json.dumps(body).encode()


def signed(body: bytes) -> dict[str, str]:
    t = str(int(time.time()))
    sig = hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def run(port: int, requests: list[tuple[str, str, bytes | None]], clients: int) -> float:
    """Seconds to send every request over ``clients`` keep-alive connections."""
    chunks = [requests[i::clients] for i in range(clients)]
    errors: list[str] = []

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for method, path, body in chunk:
            conn.request(method, path, body=body, headers=signed(body) if body else {})
            r = conn.getresponse()
            text = r.read()
            if r.status != 200 or (body and text != b"Sale recorded.\n"):
                errors.append(f"{r.status} {text!r}")
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} bad answers, first: {errors[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="listkit-bench-hooks-")) / "ws"
    init_workspace(root)
    with (root / ".env").open("a") as f:
        f.write(f"LISTKIT_STRIPE_WEBHOOK_SECRET={SECRET}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "listkit", "--workspace", str(root), "serve", "--quiet",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("listkit serve did not start") from None
                time.sleep(0.05)
        n = args.requests
        run(port, [("GET", "/healthz", None)] * 100, args.clients)  # warm up
        base = run(port, [("GET", "/healthz", None)] * n, args.clients)
        hooks = run(port, [("POST", "/hooks/stripe", event(i)) for i in range(n)], args.clients)
    finally:
        proc.terminate()
        proc.wait(10)
    db = sqlite3.connect(root / "listkit.db")
    stored = db.execute("SELECT COUNT(*) FROM sales").fetchone()
    db.close()
    shutil.rmtree(root.parent)
    assert stored[0] == n, stored
    print(f"{n} requests, {args.clients} clients, synchronous=FULL")
    print(f"baseline GET /healthz:     {n / base:8.0f} req/s")
    print(f"listkit POST /hooks/stripe:{n / hooks:8.0f} req/s  ({stored[0]} sales stored)")
    print(f"ratio (webhook time / baseline time): {hooks / base:.2f}")


if __name__ == "__main__":
    main()
