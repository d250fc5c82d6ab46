"""`listkit report --by sequence`: each step's figures, sales attributed to a step's
delivery by every rule a campaign's are, and a sequence's lift against its holdout.

The steps are sent for real (`send --due`'s library call into the recording SMTP
server, the clock moved through the sequence), and the readers' answers go through
the functions `listkit serve` records them with."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest

from listkit.audience.subscribers import unsubscribe_delivery
from listkit.db import immediate
from listkit.inbox.clicks import record_click
from listkit.mail.tracking import parse_unsubscribe_url, personal_coupon
from listkit.sales.reports import lift
from tests.test_reports import _statements
from tests.test_sequence_sending import install, join_welcome, load, point_at, step_of, tick

GOLDEN = Path(__file__).parent / "golden" / "report-by-sequence.txt"
READERS = ["ann", "bob", "cy", "dee", "eve", "fay"]


def email(name: str) -> str:
    return f"{name}@example.com"


def deliveries(ws, handler, step: str) -> dict[str, dict]:
    """The step's deliveries by reader: id, state, and the token and personal coupon
    of the message the reader got (read from its List-Unsubscribe link, as sent)."""
    sent = {}
    for _mid, rcpt, data in handler.messages:
        if step_of(data) == step:
            link = message_from_bytes(data)["List-Unsubscribe"].strip("<>")
            sent[rcpt] = parse_unsubscribe_url(link)[0]
    out = {}
    for address, did, state in ws.db.execute(
        """SELECT s.email, d.id, d.state FROM deliveries d
           JOIN subscribers s ON s.id = d.subscriber_id
           JOIN campaigns c ON c.id = d.campaign_id WHERE c.slug = ?""",
        [f"welcome/{step}"],
    ):
        token = sent.get(address)
        out[address.split("@")[0]] = {
            "id": did,
            "state": state,
            "token": token,
            "coupon": personal_coupon("LAUNCH30", token) if token else None,
        }
    return out


def report(run) -> dict:
    data = json.loads(run("report", "--by", "sequence", "--json").output)
    return {s["sequence"]: s for s in data["sequences"]}


def steps(run) -> dict[str, dict]:
    return {s["step"]: s for s in report(run)["welcome"]["steps"]}


@pytest.fixture
def handler(server):
    """What the recording SMTP server received."""
    return server[1]


@pytest.fixture
def welcome(run, workspace, server):
    """The welcome sequence (download, story, offer) sent to six readers of blog;
    eve's address refuses the first step (550). The time its last step went."""
    controller, handler = server
    t0 = join_welcome(run, workspace, controller.port, [email(name) for name in READERS])
    handler.fault(email("eve"), "550")
    for at in (timedelta(minutes=1), timedelta(days=2, minutes=2), timedelta(days=5, minutes=3)):
        tick(workspace, t0 + at)
    return datetime.now(UTC)


def import_sales(run, tmp_path: Path, lines: list[str]) -> None:
    """`listkit sales import` of a CSV with these lines (order, email, amount,
    currency, date, coupon, token, utm_campaign, utm_content)."""
    f = tmp_path / "sales.csv"
    f.write_text(
        "order,email,amount,currency,date,coupon,token,utm_campaign,utm_content\n"
        + "".join(line + "\n" for line in lines)
    )
    run("sales", "import", str(f))


def test_a_sale_is_attributed_to_a_steps_delivery_by_token_coupon_utm_click_and_email(
    run, ws, welcome, handler, tmp_path
):
    offer, story = deliveries(ws, handler, "offer"), deliveries(ws, handler, "story")
    with immediate(ws.db):
        record_click(
            ws.db, story["dee"]["id"], "click", welcome.isoformat(), "https://x", None, None
        )
    at = (welcome + timedelta(hours=1)).isoformat()
    import_sales(
        run,
        tmp_path,
        [
            # ann's token of the offer step, bought from another address
            f"1,x@example.com,29,USD,{at},,{offer['ann']['token']},,",
            # bob's own code of the offer step, from another address
            f"2,y@example.com,29,USD,{at},{offer['bob']['coupon'].lower()},,,",
            # the launch offer's code for everyone, used by cy, who got the step
            f"3,cy@example.com,29,USD,{at},launch30,,,",
            # the shop kept the UTM parameters of the story step only
            f"4,new@example.com,29,USD,{at},,,welcome/story,blog",
            # dee clicked the story's link, then bought
            f"5,dee@example.com,29,USD,{at},,,,",
            # fay bought within the window of the last message she got
            f"6,fay@example.com,29,USD,{at},,,,",
        ],
    )
    sold = {
        r["order"]: (r["method"], r["campaign"], r["list"])
        for r in json.loads(run("sales", "ls", "--json").output)
    }
    assert sold == {
        "1": ("token", "welcome/offer", "blog"),
        "2": ("coupon", "welcome/offer", "blog"),
        "3": ("coupon", "welcome/offer", "blog"),
        "4": ("utm", "welcome/story", "blog"),
        "5": ("click", "welcome/story", "blog"),
        "6": ("email", "welcome/offer", "blog"),
    }
    by_step = steps(run)
    assert by_step["offer"]["methods"] == {"token": 1, "coupon": 2, "email": 1}
    assert by_step["story"]["methods"] == {"utm": 1, "click": 1}
    assert by_step["offer"]["buyers"] == 4
    assert by_step["story"]["buyers"] == 2
    assert by_step["download"]["buyers"] == 0


def test_a_steps_campaign_row_follows_its_offers_coupon_when_the_offer_is_edited(
    run, ws, workspace
):
    run("lists", "create", "blog")
    install(workspace, "welcome")
    load(workspace)

    def coupon() -> str | None:
        return ws.db.execute(
            "SELECT coupon FROM campaigns WHERE slug = 'welcome/offer'"
        ).fetchone()[0]

    assert coupon() == "LAUNCH30"
    toml = workspace / "offers" / "launch" / "offer.toml"
    toml.write_text(toml.read_text().replace('coupon = "LAUNCH30"', 'coupon = "LAUNCH40"'))
    load(workspace)
    assert coupon() == "LAUNCH40"


def test_each_step_shows_sent_unsubscribed_bounced_clicks_buyers_and_revenue_per_1000(
    run, ws, welcome, handler, tmp_path
):
    story, offer = deliveries(ws, handler, "story"), deliveries(ws, handler, "offer")
    with immediate(ws.db):
        unsubscribe_delivery(
            ws.db, ws.settings.secret_key(), story["bob"]["token"], everything=False
        )
        for name in ("ann", "cy"):
            record_click(
                ws.db, offer[name]["id"], "click", welcome.isoformat(), "https://x", None, None
            )
        # a link scanner's fetch is not a reader's click
        record_click(
            ws.db, offer["dee"]["id"], "click_bot", welcome.isoformat(), "https://x", None, None
        )
    at = (welcome + timedelta(hours=1)).isoformat()
    import_sales(
        run,
        tmp_path,
        [
            f"1,ann@example.com,29,USD,{at},,{offer['ann']['token']},,",
            f"2,ann@example.com,10,USD,{at},,{offer['ann']['token']},,",
            f"3,cy@example.com,20,USD,{at},,{offer['cy']['token']},,",
        ],
    )
    figures = {
        name: {k: s[k] for k in ("sent", "unsubscribed", "bounced", "clicks", "buyers", "orders")}
        | {"revenue": s["revenue"], "per_1000": s["revenue_per_1000"]}
        for name, s in steps(run).items()
    }
    # eve's address refused the download (a hard bounce ends the sequence for her);
    # bob left through the story's link after the offer had gone.
    assert figures == {
        "download": dict(sent=5, unsubscribed=0, bounced=1, clicks=0, buyers=0, orders=0)
        | {"revenue": {}, "per_1000": {}},
        "story": dict(sent=5, unsubscribed=1, bounced=0, clicks=0, buyers=0, orders=0)
        | {"revenue": {}, "per_1000": {}},
        "offer": dict(sent=5, unsubscribed=0, bounced=0, clicks=2, buyers=2, orders=3)
        | {"revenue": {"USD": 5900}, "per_1000": {"USD": 1180000}},
    }
    totals = report(run)["welcome"]["totals"]
    assert (totals["sent"], totals["buyers"], totals["revenue_per_1000"]) == (
        15,
        2,
        {"USD": 393333},
    )


def test_the_text_report_is_the_golden_output(run, ws, welcome, handler, tmp_path):
    offer = deliveries(ws, handler, "offer")
    at = (welcome + timedelta(hours=1)).isoformat()
    import_sales(run, tmp_path, [f"1,a@x.org,29,USD,{at},,{offer['ann']['token']},,"])
    out = []
    for form in ((), ("--csv",)):
        args = ("report", "--by", "sequence", *form)
        out.append(f"$ listkit {' '.join(args)}\n{run(*args).output}")
    text = "\n".join(out)
    if os.environ.get("GOLDEN_WRITE") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_a_period_is_refused_with_the_reason(run):
    result = run("report", "--by", "sequence", "--since", "2026-11-01", ok=False)
    assert result.exit_code == 1
    assert "Error: --by sequence reports all time (a sequence's steps send every day)" in (
        result.output
    )


def test_no_sequences_says_so(run):
    assert run("report", "--by", "sequence").output == "No sequences yet: see docs/sequences.md.\n"
    assert json.loads(run("report", "--by", "sequence", "--json").output)["sequences"] == []


def test_the_lift_compares_readers_mailed_with_those_held_out_in_the_sequences_window(
    run, ws, workspace, server, tmp_path
):
    controller, _handler = server
    readers = [email(f"r{i}") for i in range(40)]
    t0 = join_welcome(run, workspace, controller.port, readers, holdout="0.5")
    tick(workspace, t0 + timedelta(minutes=1))
    state = dict(
        ws.db.execute(
            """SELECT s.email, e.state FROM enrollments e JOIN subscribers s
           ON s.id = e.subscriber_id"""
        ).fetchall()
    )
    mailed = sorted(a for a in readers if state[a] == "active")
    held = sorted(a for a in readers if state[a] == "held_out")
    assert len(mailed) + len(held) == 40 and len(mailed) >= 4 and len(held) >= 3
    soon = (t0 + timedelta(days=1)).isoformat()
    # The window: the steps' delays (0m + 2d + 3d) and attribution_days (7) after entry.
    late = (t0 + timedelta(days=12, hours=1)).isoformat()
    before = (t0 - timedelta(hours=1)).isoformat()
    lines = [f"m{i},{a},29,USD,{soon},,,," for i, a in enumerate(mailed[:3])]
    lines += [f"h0,{held[0]},29,USD,{soon},,,,", f"h1,{held[1]},29,USD,{late},,,,"]
    lines += [f"b0,{mailed[3]},29,USD,{before},,,,"]
    lines += [f"m9,{mailed[0]},29,USD,{soon},,,,"]  # a second order: one buyer still
    import_sales(run, tmp_path, lines)
    result = report(run)["welcome"]["lift"]
    assert result == {
        "holdout": 0.5,
        "window_days": 12.0,
        **lift(len(mailed), 3, len(held), 1),
    }
    assert result["ci95"][0] < result["difference"] < result["ci95"][1]
    text = run("report", "--by", "sequence").output
    ci = result["ci95"]
    assert (
        f"Lift of welcome: mailed {3 / len(mailed):.2%} bought, held out {1 / len(held):.2%}: "
        f"{3 / len(mailed) - 1 / len(held):+.2%} (95% interval {ci[0]:+.2%} to {ci[1]:+.2%}); "
        f"3 of {len(mailed)} mailed bought, 1 of {len(held)} held out"
    ) in text


def test_a_sequence_without_a_holdout_shows_no_lift(run, welcome):
    assert report(run)["welcome"]["lift"] is None
    assert "Lift of" not in run("report", "--by", "sequence").output


def test_a_holdout_with_nobody_held_out_yet_says_so_rather_than_a_difference(
    run, workspace, server
):
    point_at(workspace, server[0].port)
    run("lists", "create", "blog")
    install(workspace, "welcome", holdout="0.1")
    load(workspace)
    run("subscribers", "add", email("ann"), "--list", "blog")
    assert run("report", "--by", "sequence").output.endswith(
        "Lift of welcome: no reader held out yet (holdout 10%)\n"
    )


def test_the_html_report_shows_each_step_and_embeds_what_json_says(
    run, ws, welcome, handler, tmp_path
):
    offer = deliveries(ws, handler, "offer")
    at = (welcome + timedelta(hours=1)).isoformat()
    import_sales(run, tmp_path, [f"1,a@x.org,29,USD,{at},,{offer['ann']['token']},,"])
    page = tmp_path / "report.html"
    run("report", "--by", "sequence", "--html", str(page))
    html = page.read_text()
    embedded = re.search(r'id="listkit-sequences">(.*?)</script>', html).group(1)
    assert json.loads(embedded) == json.loads(run("report", "--by", "sequence", "--json").output)
    row = re.search(r'<tr data-sequence="welcome" data-step="offer">(.*?)</tr>', html).group(1)
    assert re.findall(r"<td>(.*?)</td>", row) == [
        "welcome", "offer", "5", "0", "0", "0", "1", "USD 29.00", "USD 5,800.00"
    ]  # fmt: skip
    # A period's page leaves the sequences out (they are reported for all time).
    run("report", "--since", "2026-01-01", "--html", str(page))
    assert "listkit-sequences" not in page.read_text()


def test_the_html_page_builds_the_campaign_figures_once_with_sequences_on_it(
    run, welcome, tmp_path, monkeypatch
):
    # The page's sequence section takes the steps' rows from the page's report by
    # campaign: building its own counted every delivery and sale a second time.
    statements = _statements(monkeypatch)
    run("report", "--html", str(tmp_path / "r.html"))
    figures = Counter(s for s in statements if re.search(r"\b(deliveries|sales|events)\b", s))
    assert len(figures) > 5
    assert {sql: n for sql, n in figures.items() if n > 1} == {}
    assert "listkit-sequences" in (tmp_path / "r.html").read_text()
