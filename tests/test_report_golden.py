"""`listkit report` in every form, compared with what it printed when the report code
was last reorganised (tests/golden/): a refactoring changes no figure and no byte.

A change meant to alter the output rewrites the files, to be read in the diff:
``GOLDEN_WRITE=1 .venv/bin/pytest tests/test_report_golden.py``.
"""

import json
import os
from pathlib import Path

import pytest

from listkit.audience.suppressions import suppress
from listkit.sales.attribution import attribute_all
from tests.world import World

GOLDEN = Path(__file__).parent / "golden"
BYS = ("list", "offer", "campaign", "variant", "source", "signup-month", "silent")
PERIODS = ((), ("--since", "2026-11-05"), ("--since", "2026-11-01", "--until", "2026-11-04"))
SALES = (
    "1,a@example.com,29,USD,2026-11-02T10:00:00Z,,,\n"
    "2,b@example.com,1500,JPY,2026-11-03T10:00:00Z,,,\n"
    "3,d@example.com,49.50,USD,2026-11-03T10:00:00Z,,,\n"
    "4,new@example.com,29,USD,2026-11-04T10:00:00Z,LAUNCH30,,\n"
    "5,a@example.com,99,EUR,2026-11-11T10:00:00Z,,,\n"
    "6,stranger@example.com,10,USD,2026-11-11T10:00:00Z,,,\n"
)


@pytest.fixture
def world(run, ws, tmp_path):
    """Lists mailed, not mailed and mailed through another; a holdout campaign with a
    bounce, an unsubscribe, a complaint and clicks; an offer test; sales in three
    currencies, one by coupon only, one unattributed."""
    w = World(ws.db)
    t = w.campaign("t", coupon="LAUNCH30")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        w.deliver(t, email, "blog")
    w.deliver(t, "f@example.com", "blog", state="failed", code=550)
    w.deliver(t, "d@example.com", "shop")
    u = w.campaign("u", offer="course", started="2026-11-10T10:00:00+00:00")
    for email in ("a@example.com", "b@example.com"):
        w.deliver(u, email, "blog", sent_at="2026-11-10T10:00:00+00:00")
    w.list("dormant", "z1@example.com", "z2@example.com")
    w.list("dormant", "gone@example.com", status="unsubscribed")
    w.list("fans", "a@example.com", "b@example.com")
    h = w.campaign("h", holdout=0.2, days=7, offer="<b>offer</b>")
    mailed = {f"m{i}@example.com": w.deliver(h, f"m{i}@example.com", "blog") for i in range(40)}
    for i in range(10):
        w.deliver(h, f"h{i}@example.com", "blog", state="held_out")
    ab = w.campaign("ab", offer="launch", started="2026-11-05T10:00:00+00:00")
    x1, x2, _x3 = (w.deliver(ab, f"x{i}@example.com", "pod") for i in (1, 2, 3))
    with ws.db.conn:
        ws.db.execute(
            "UPDATE campaigns SET variants = ? WHERE id = ?", ['["launch", "bundle"]', ab]
        )
        ws.db.execute("UPDATE deliveries SET variant = 'launch' WHERE id = ?", [x1["id"]])
        ws.db.execute(
            "UPDATE deliveries SET variant = 'bundle' WHERE email IN (?, ?)",
            ["x2@example.com", "x3@example.com"],
        )
        ws.db.execute(
            """INSERT INTO sales (source, order_id, amount, currency, at, email, email_key,
               token, imported) VALUES ('t', 'v1', 4900, 'USD', '2026-11-06T10:00:00+00:00',
               'x2@example.com', 'x2@example.com', ?, '2026-11-06')""",
            [x2["token"]],
        )
        for kind, i in [("complaint", 2), ("click", 3), ("click", 4), ("click_bot", 5)]:
            ws.db.execute(
                "INSERT INTO events (delivery_id, kind, at, detail) VALUES (?, ?, ?, '{}')",
                [mailed[f"m{i}@example.com"]["id"], kind, "2026-11-02T10:00:00+00:00"],
            )
        ws.db.execute(
            "INSERT INTO events (delivery_id, kind, at, detail) VALUES (?, ?, ?, '{}')",
            [mailed["m6@example.com"]["id"], "unsubscribe", "2026-11-02T10:00:00+00:00"],
        )
    attribute_all(ws.db)
    suppress(ws.db, "m0@example.com", "hard_bounce", campaign_id=h)
    suppress(ws.db, "m1@example.com", "unsubscribed", campaign_id=h)
    f = tmp_path / "sales.csv"
    f.write_text(
        "order,email,amount,currency,date,coupon,utm_campaign,utm_content\n"
        + SALES
        + "".join(f"m{i},m{i}@example.com,10,USD,2026-11-03T00:00:00Z,,,\n" for i in range(3, 9))
        + "h0,h0@example.com,10,USD,2026-11-08T10:00:00Z,,,\n"
    )
    run("sales", "import", str(f))
    return run


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("GOLDEN_WRITE") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_every_form_of_the_report_prints_what_it_printed_before(world):
    out = []
    for by in BYS:
        for period in PERIODS:
            for form in ((), ("--json",), ("--csv",)):
                args = ("report", "--by", by, *period, *form)
                result = world(*args)
                out.append(f"$ listkit {' '.join(args)}\n{result.output}")
    _check("report.txt", "\n".join(out))
    json.loads(world("report", "--json").output)  # the file is not all errors


@pytest.mark.parametrize(
    "name, args",
    [
        ("report-by-list.html", ()),
        ("report-by-offer-since.html", ("--by", "offer", "--since", "2026-11-05")),
        ("report-by-variant-until.html", ("--by", "variant", "--until", "2026-11-04")),
    ],
)
def test_the_html_report_is_the_page_it_was_before(world, tmp_path, name, args):
    page = tmp_path / "report.html"
    world("report", *args, "--html", str(page))
    _check(name, page.read_text())
