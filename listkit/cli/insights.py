"""Report views beyond list/offer/campaign: sequences (each step), offer tests
(variant), where buyers come from (source, signup-month), and silent subscribers; as
text, JSON, CSV and HTML."""

from __future__ import annotations

import json
from html import escape

import click

from listkit.cli.output import emit_csv, emit_json, emit_table
from listkit.sales.money import format_amounts
from listkit.sales.reports import BY, build_reports, build_sequence_report, lift_text
from listkit.sales.stats import buyers_by, silent_by_list, silent_subscribers
from listkit.send.variants import table_rows, variant_report, verdict_lines
from listkit.workspace import Workspace

INSIGHTS = ("sequence", "variant", "source", "signup-month", "silent")
VARIANT_CSV = ["campaign", "variant", "delivered", "buyers", "currency", "revenue", "per_1000"]
VARIANT_CSV += ["ci95_low", "ci95_high", "winner"]
# A step's figures, after its sequence and name (the table, the CSV, the page).
STEP_COLUMNS = ("sent", "unsubscribed", "bounced", "clicks", "buyers", "revenue", "per_1000")
STEP_HEADERS = ("sent", "unsub", "bounced", "clicks", "buyers", "revenue", "per 1k sent")
BUYERS_CSV = ["subscribers", "buyers", "orders", "currency", "revenue", "revenue_per_subscriber"]


def show_insight(
    ws: Workspace, by: str, since: str | None, until: str | None, *, json_: bool, csv_: bool
) -> None:
    """``report --by`` one of INSIGHTS, as a table, JSON or CSV."""
    if by == "silent":
        _show_silent(ws, json_=json_, csv_=csv_)
    elif by == "sequence":
        _show_sequences(build_sequence_report(ws.db, since, until), json_=json_, csv_=csv_)
    elif by == "variant":
        _show_variants(variant_report(ws.db, since, until), json_=json_, csv_=csv_)
    else:
        _show_buyers(buyers_by(ws.db, by, since, until), json_=json_, csv_=csv_)


def step_rows(data: dict) -> list[dict]:
    """Each sequence's steps, then its totals (step ``(all)``), money as it reads."""
    out = []
    for seq in data["sequences"]:
        for step in [*seq["steps"], {"step": "(all)", **seq["totals"]}]:
            out.append(
                {
                    "sequence": seq["sequence"],
                    **step,
                    "step": step["step"] + (" (removed)" if step.get("removed") else ""),
                    "revenue": format_amounts(step["revenue"], "-"),
                    "per_1000": format_amounts(step["revenue_per_1000"], "-"),
                }
            )
    return out


def _show_sequences(data: dict, *, json_: bool, csv_: bool) -> None:
    """Each step of each sequence, then each sequence's lift against its holdout."""
    if json_:
        emit_json(data)
        return
    if csv_:
        emit_csv(
            [
                {
                    "sequence": seq["sequence"],
                    **step,
                    "currency": cur,
                    "revenue": step["revenue"].get(cur, 0),
                    "per_1000": step["revenue_per_1000"].get(cur, ""),
                }
                for seq in data["sequences"]
                for step in [*seq["steps"], {"step": "(all)", **seq["totals"]}]
                for cur in sorted(step["revenue"]) or [""]
            ],
            ["sequence", "step", *STEP_COLUMNS[:-2], "currency", "revenue", "per_1000"],
        )
        return
    emit_table(
        step_rows(data),
        ["sequence", "step", *STEP_COLUMNS],
        headers=["sequence", "step", *STEP_HEADERS],
        empty="No sequences yet: see docs/sequences.md.",
    )
    for seq in data["sequences"]:
        if seq["lift"]:
            click.echo(sequence_lift_text(seq))


def sequence_lift_text(seq: dict) -> str:
    """A sequence's lift in words, with the size of both groups (while nobody is held
    out yet, only that)."""
    h = seq["lift"]
    if not h["held_out"]:
        return f"Lift of {seq['sequence']}: no reader held out yet (holdout {h['holdout']:.0%})"
    return (
        f"{lift_text(seq['sequence'], h)}; {h['mailed_buyers']:,} of {h['mailed']:,} mailed "
        f"bought, {h['held_out_buyers']:,} of {h['held_out']:,} held out"
    )


def _show_variants(tests: list[dict], *, json_: bool, csv_: bool) -> None:
    """The offer tests: each variant's figures, the difference and the verdict."""
    if json_:
        emit_json(tests)
        return
    if csv_:
        emit_csv(
            [
                {"campaign": t["campaign"], "currency": t["currency"], **v}
                | {"ci95_low": v["ci95"][0] if v["ci95"] else "", "winner": t["winner"] or ""}
                | {"ci95_high": v["ci95"][1] if v["ci95"] else ""}
                for t in tests
                for v in t["variants"]
            ],
            VARIANT_CSV,
        )
        return
    if not tests:
        click.echo("No offer tests yet: give a campaign variants = ['offer-a', 'offer-b'].")
    for t in tests:
        _print_test(t)


def _show_buyers(data: dict, *, json_: bool, csv_: bool) -> None:
    """Where buyers come from: subscribers, buyers and revenue by source or signup month."""
    by = data["by"]
    if json_:
        emit_json(data)
        return
    if csv_:
        emit_csv(
            [
                {
                    **r,
                    "currency": c,
                    "revenue": v,
                    "revenue_per_subscriber": r["revenue_per_subscriber"].get(c, ""),
                }
                for r in data["rows"]
                for c, v in (sorted(r["revenue"].items()) or [("", 0)])
            ],
            [by, *BUYERS_CSV],
        )
        return
    rows = [
        {
            **r,
            "revenue": format_amounts(r["revenue"], "-"),
            "per_subscriber": format_amounts(r["revenue_per_subscriber"], "-"),
        }
        for r in data["rows"]
    ]
    emit_table(
        rows,
        [by, "subscribers", "buyers", "orders", "revenue", "per_subscriber"],
        headers=[by, "subscribers", "buyers", "orders", "revenue", "per subscriber"],
        empty="No subscribers yet.",
    )


def _show_silent(ws: Workspace, *, json_: bool, csv_: bool) -> None:
    """Members mailed LISTKIT_SILENT_AFTER+ times with no purchase and no click, per list."""
    threshold = ws.settings.silent_after
    if csv_:
        emit_csv(silent_subscribers(ws.db, threshold), ["list", "email", "sent"])
        return
    per_list = silent_by_list(ws.db, threshold)
    if json_:
        emit_json(
            {
                "threshold": threshold,
                "lists": per_list,
                "subscribers": list(silent_subscribers(ws.db, threshold)),
            }
        )
        return
    emit_table(
        per_list,
        ["list", "silent"],
        empty=f"Nobody is silent: no active member was mailed {threshold}+ times without a "
        "purchase or a click.",
    )
    if per_list:
        click.echo(
            f"Silent: mailed {threshold}+ times (LISTKIT_SILENT_AFTER), no purchase, no click. "
            "`listkit report --by silent --csv` lists them; `listkit lists prune LIST --silent` "
            "moves them out."
        )


def _print_test(t: dict) -> None:
    click.echo(
        f"Offer test {t['campaign']} ({t['currency'] or 'no revenue yet'}, "
        f"attribution window {t['window_days']} days):"
    )
    emit_table(
        table_rows(t),
        ["variant", "delivered", "buyers", "revenue", "per_1000", "ci95"],
        headers=["variant", "delivered", "buyers", "revenue", "per 1k delivered", "95% interval"],
    )
    for line in verdict_lines(t):
        click.echo(line)
    click.echo("")


def report_data(
    ws: Workspace, by: str, since: str | None, until: str | None, *, page: bool = False
) -> dict:
    """Everything one ``listkit report`` shows, built once: ``report``, the report
    grouped ``by`` (by list for the other views) with the period's offer tests (as
    ``--json`` gives it); for the HTML ``page`` also ``by_list``, ``by_offer`` and
    ``by_campaign`` (``report`` itself where it is that grouping) and ``insights``,
    the data of the page's further sections."""
    main = by if by in BY else "list"
    groupings = (main, *(g for g in BY if g != main)) if page else (main,)
    reports = build_reports(ws.db, groupings, since, until)
    tests = variant_report(ws.db, since, until)
    data = {"report": {**reports[main], "offer_tests": tests}}
    if page:
        for grouping in BY:
            data[f"by_{grouping}"] = data["report"] if by == grouping else reports[grouping]
        data["insights"] = _insights(ws, since, until, tests, data["by_campaign"])
    return data


def _insights(
    ws: Workspace, since: str | None, until: str | None, tests: list[dict], by_campaign: dict
) -> dict:
    """The HTML report's further figures: the sequences (from the report by campaign,
    without a period), offer tests, buyers by source and signup month, silent
    subscribers (and the threshold that makes one silent)."""
    threshold = ws.settings.silent_after
    return {
        # Sequences are reported for all time (their steps send every day).
        "sequences": None
        if since or until
        else build_sequence_report(ws.db, by_campaign=by_campaign),
        "variants": tests,
        "by_source": buyers_by(ws.db, "source", since, until),
        "by_signup_month": buyers_by(ws.db, "signup-month", since, until),
        "silent": silent_by_list(ws.db, threshold),
        "threshold": threshold,
    }


def show_offer_verdicts(tests: list[dict]) -> None:
    """After the main report: the offer tests' verdicts. (Silent subscribers take a pass
    over every delivery: `report --by silent` shows them.)"""
    for t in tests:
        click.echo(f"Offer test {t['campaign']}: " + " ".join(verdict_lines(t)))


def insight_sections(insights: dict) -> str:
    """HTML sections for the report page: offer tests, buyers by source and signup month,
    silent subscribers; their data embedded as JSON (id listkit-insights, and the
    sequences' as id listkit-sequences)."""
    parts = _sequence_sections(insights["sequences"])
    parts += [_offer_test_section(t) for t in insights["variants"]]
    for title, data in (
        ("signup source", insights["by_source"]),
        ("signup month", insights["by_signup_month"]),
    ):
        parts.append(_buyers_section(title, data))
    if insights["silent"]:
        names = ", ".join(f"{escape(s['list'])} ({s['silent']:,})" for s in insights["silent"])
        parts.append(
            f'<h2>Silent subscribers</h2><p class="warn">Mailed {insights["threshold"]} or more '
            f"times with no purchase and no click: {names}. <code>listkit lists prune LIST "
            "--silent</code> moves them out, keeping their history.</p>"
        )
    data = json.dumps(
        {k: v for k, v in insights.items() if k not in ("threshold", "sequences")},
        ensure_ascii=False,
    ).replace("<", "\\u003c")
    parts.append(f'<script type="application/json" id="listkit-insights">{data}</script>')
    return "".join(parts)


def _sequence_sections(data: dict | None) -> list[str]:
    """The sequences' steps as a table, each sequence's lift, and their data as JSON;
    nothing when there are none."""
    if not data or not data["sequences"]:
        return []
    head = "".join(f"<th>{h}</th>" for h in ("sequence", "step", *STEP_HEADERS))
    rows = "".join(
        f'<tr data-sequence="{escape(r["sequence"])}" data-step="{escape(r["step"])}">'
        + "".join(
            f"<td>{escape(f'{r[k]:,}' if isinstance(r[k], int) else str(r[k]))}</td>"
            for k in ("sequence", "step", *STEP_COLUMNS)
        )
        + "</tr>"
        for r in step_rows(data)
    )
    parts = [
        f'<h2>Sequences</h2><div class="wide"><table class="sequences"><tr>{head}</tr>'
        f"{rows}</table></div>"
    ]
    parts += [
        f"<p>{escape(sequence_lift_text(seq))}.</p>" for seq in data["sequences"] if seq["lift"]
    ]
    embedded = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    parts.append(f'<script type="application/json" id="listkit-sequences">{embedded}</script>')
    return parts


def _offer_test_section(t: dict) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(r[k]))}</td>" for k in r) + "</tr>"
        for r in table_rows(t)
    )
    verdict = "".join(f"<p>{escape(line)}</p>" for line in verdict_lines(t))
    return (
        f'<h2>Offer test {escape(t["campaign"])}</h2><div class="wide"><table '
        f'class="variants" data-campaign="{escape(t["campaign"])}"><tr><th>variant</th>'
        "<th>delivered</th><th>buyers</th><th>revenue</th><th>per 1,000 delivered</th>"
        f"<th>95% interval</th></tr>{rows}</table></div>{verdict}"
    )


def _buyers_section(title: str, data: dict) -> str:
    key = data["by"]
    rows = "".join(
        f"<tr><td>{escape(str(r[key]))}</td><td>{r['subscribers']:,}</td>"
        f"<td>{r['buyers']:,}</td><td>{r['orders']:,}</td>"
        f"<td>{escape(format_amounts(r['revenue'], '–'))}</td>"
        f"<td>{escape(format_amounts(r['revenue_per_subscriber'], '–'))}</td></tr>"
        for r in data["rows"]
    )
    return (
        f'<h2>Where buyers come from: by {title}</h2><div class="wide"><table><tr>'
        f"<th>{title}</th><th>subscribers</th><th>buyers</th><th>orders</th>"
        f"<th>revenue</th><th>per subscriber</th></tr>{rows}</table></div>"
    )
