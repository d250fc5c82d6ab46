"""Benchmark: reading webhook JSON within limits (``listkit.payloads.loads``) against
``json.loads``.

In the same run, for the same bodies: a Stripe ``checkout.session.completed``
event as the shop sends it, and an object of 2,000 numbers (the worst case
for the number-length check, which runs once per number). Both readers must
return the same value before anything is timed. Prints microseconds per body
and the ratio.

    .venv/bin/python bench/payloads.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import timeit

from listkit.payloads import loads

STRIPE = {
    "id": "evt_1",
    "object": "event",
    "type": "checkout.session.completed",
    "livemode": True,
    "created": 1794000100,
    "data": {
        "object": {
            "object": "checkout.session",
            "id": "cs_live_1",
            "payment_intent": "pi_live_1",
            "client_reference_id": "abcdefghijklmnop",
            "customer_details": {"email": "jo@example.com"},
            "amount_total": 4900,
            "currency": "eur",
            "payment_status": "paid",
            "metadata": {"utm_campaign": "launch", "utm_content": "blog"},
            "created": 1794000000,
        }
    },
}
NUMBERS = {"type": "x", "data": {"object": {"metadata": {f"k{i}": i for i in range(2000)}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, value, number in (("Stripe event", STRIPE, 5000), ("2,000 numbers", NUMBERS, 200)):
        body = json.dumps(value).encode()
        assert loads(body) == json.loads(body) == value
        base = min(timeit.repeat(lambda b=body: json.loads(b), number=number, repeat=args.repeat))
        ours = min(timeit.repeat(lambda b=body: loads(b), number=number, repeat=args.repeat))
        print(
            f"{name} ({len(body):,} bytes): json.loads {base / number * 1e6:.1f} us, "
            f"payloads.loads {ours / number * 1e6:.1f} us, ratio {ours / base:.2f}"
        )


if __name__ == "__main__":
    main()
