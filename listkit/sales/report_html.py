"""The HTML report: one self-contained file (no network), charts drawn as inline SVG.

Every bar carries its figure in ``data-value`` (minor units) and the whole
report is embedded as JSON (``<script type="application/json"
id="listkit-report">``), so a script can check what is drawn against what
``listkit report --json`` says.
"""

from __future__ import annotations

import json
from html import escape

from listkit.sales.money import exponent, format_amounts, format_minor
from listkit.sales.reports import (
    COMPLAINT_LIMITS,
    MAILED_THROUGH_NOTE,
    complaint_warning_text,
    mailed_through_text,
)

WIDTH, BAR_H, GAP, LABEL_W = 960, 22, 8, 170


def _empty(title: str, text: str) -> str:
    return f'<section><h2>{escape(title)}</h2><p class="empty">{text}</p></section>'


def _bar_chart(chart_id: str, title: str, items: list[tuple[str, int]], currency: str) -> str:
    if not items:
        return _empty(title, "No data in this period.")
    top = max(v for _k, v in items) or 1
    height = len(items) * (BAR_H + GAP) + GAP
    bars = []
    for i, (label, value) in enumerate(items):
        y = GAP + i * (BAR_H + GAP)
        w = 0 if value <= 0 else max(2, round((WIDTH - LABEL_W - 120) * value / top))
        bars.append(
            f'<g class="bar" data-label="{escape(label)}" data-value="{value}" '
            f'data-currency="{currency}">'
            f'<text x="{LABEL_W - 8}" y="{y + BAR_H * 0.7:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{LABEL_W}" y="{y}" width="{w}" height="{BAR_H}" rx="3"></rect>'
            f'<text class="value" x="{LABEL_W + w + 6}" y="{y + BAR_H * 0.7:.1f}">'
            f"{escape(format_minor(value, currency))}</text></g>"
        )
    return (
        f'<section><h2>{escape(title)}</h2><svg id="{chart_id}" class="chart" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">{"".join(bars)}</svg></section>'
    )


def _time_chart(
    chart_id: str, title: str, points: list[tuple[str, int, int]], currency: str
) -> str:
    """Revenue per day: a bar per day, its attributed part drawn darker."""
    if not points:
        return _empty(title, "No sales in this period.")
    height, pad, base = 240, 44, 200
    top = max(v for _d, v, _a in points) or 1
    step = (WIDTH - 2 * pad) / len(points)
    few = len(points) <= 14
    bars = []
    for i, (day, value, attributed) in enumerate(points):
        h = 0 if value <= 0 else max(2, round((base - pad) * value / top))
        ha = 0 if attributed <= 0 else max(1, round((base - pad) * attributed / top))
        x, w = pad + i * step + 1, max(min(step - 2, 80), 1)
        money = escape(format_minor(value, currency))
        label = (
            f'<text class="value" x="{x + w / 2:.1f}" y="{base - h - 6}" '
            f'text-anchor="middle">{money}</text>'
            f'<text x="{x + w / 2:.1f}" y="{base + 18}" text-anchor="middle">{day}</text>'
            if few
            else ""
        )
        bars.append(
            f'<g class="bar" data-label="{day}" data-value="{value}" '
            f'data-attributed="{attributed}" data-currency="{currency}">'
            f'<rect class="all" x="{x:.1f}" y="{base - h}" width="{w:.1f}" height="{h}">'
            f"<title>{day}: {money}</title></rect>"
            f'<rect class="attributed" x="{x:.1f}" y="{base - ha}" width="{w:.1f}" '
            f'height="{ha}"></rect>{label}</g>'
        )
    axis = [f'<line x1="{pad}" y1="{base}" x2="{WIDTH - pad}" y2="{base}"></line>']
    if not few:
        axis.append(f'<text x="{pad}" y="{base + 18}">{points[0][0]}</text>')
        axis.append(
            f'<text x="{WIDTH - pad}" y="{base + 18}" text-anchor="end">{points[-1][0]}</text>'
        )
    axis.append(
        f'<text x="{pad}" y="{pad - 24}">highest day {escape(format_minor(top, currency))}</text>'
        f'<rect class="attributed" x="{WIDTH - pad - 230}" y="{pad - 34}" width="12" '
        f'height="12"></rect><text x="{WIDTH - pad - 212}" y="{pad - 24}">attributed</text>'
        f'<rect class="all" x="{WIDTH - pad - 120}" y="{pad - 34}" width="12" height="12">'
        f'</rect><text x="{WIDTH - pad - 102}" y="{pad - 24}">unattributed</text>'
    )
    return (
        f'<section><h2>{escape(title)}</h2><svg id="{chart_id}" class="chart time" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">{"".join(bars)}{"".join(axis)}</svg></section>'
    )


def _rate_chart(
    chart_id: str,
    title: str,
    items: list[tuple[str, float | None]],
    limits: tuple = (),
    empty: str = "Nothing sent in this period.",
    kind: str = "",
) -> str:
    """A rate per row (a fraction, shown as a percentage), with dashed lines at ``limits``."""
    items = [(label, rate) for label, rate in items if rate is not None]
    if not items:
        return _empty(title, empty)
    top = max([rate for _k, rate in items] + [x * 1.25 for x in limits]) or 1
    span = WIDTH - LABEL_W - 120
    height = len(items) * (BAR_H + GAP) + GAP + (18 if limits else 0)
    bars = []
    for i, (label, rate) in enumerate(items):
        y = GAP + i * (BAR_H + GAP)
        w = 0 if rate <= 0 else max(2, round(span * rate / top))
        over = next((x for x in sorted(limits, reverse=True) if rate > x), None)
        cls = "" if over is None else (" over" if over == max(limits) else " near")
        bars.append(
            f'<g class="bar rate{cls}" data-label="{escape(label)}" data-rate="{rate!r}">'
            f'<text x="{LABEL_W - 8}" y="{y + BAR_H * 0.7:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{LABEL_W}" y="{y}" width="{w}" height="{BAR_H}" rx="3"></rect>'
            # The figures in a column right of the longest bar: never under a limit line.
            f'<text class="value" x="{LABEL_W + span + 8}" y="{y + BAR_H * 0.7:.1f}">'
            f"{rate:.2%}</text></g>"
        )
    marks = []
    bottom = height - 18
    for limit in limits:
        x = LABEL_W + round(span * limit / top)
        marks.append(
            f'<line class="limit" x1="{x}" y1="2" x2="{x}" y2="{bottom}"></line>'
            f'<text class="limit" x="{x}" y="{bottom + 14}" text-anchor="middle">'
            f"{limit:.1%}</text>"
        )
    return (
        f'<section><h2>{escape(title)}</h2><svg id="{chart_id}" class="chart rates{kind}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">{"".join(bars)}{"".join(marks)}</svg></section>'
    )


def _rate_cell(row: str, name: str, rate: float | None) -> str:
    """A table cell for a rate: the figure shown, and exactly in ``data-value``."""
    value = "" if rate is None else repr(rate)
    shown = "–" if rate is None else f"{rate:.2%}"
    return f'<td data-row="{escape(row)}" data-rate="{name}" data-value="{value}">{shown}</td>'


def main_currency(report: dict) -> str | None:
    revenue = report["totals"]["revenue"]
    if not revenue:
        return None
    # The currency with the most revenue in whole units (minor units differ by currency).
    return max(revenue, key=lambda c: (revenue[c] / 10 ** exponent(c), c))


def _table(report: dict) -> str:
    by = report["by"]
    head = (
        f"<tr><th>{by}</th><th>audience</th><th>sent</th><th>failed</th><th>unsub.</th>"
        "<th>bounced</th><th>bounce %</th><th>compl.</th><th>compl. %</th>"
        "<th>orders</th><th>revenue</th><th>conv.</th><th>per 1,000 sent</th>"
        "<th>clicks</th><th>buy/click</th><th>attributed by</th></tr>"
    )
    body = []
    for r in report["rows"]:
        revenue = format_amounts(r["revenue"], "–")
        per_k = format_amounts(r["revenue_per_1000"])
        conv = f"{r['conversion_rate']:.2%}" if r["conversion_rate"] is not None else "–"
        methods = ", ".join(f"{m} {n}" for m, n in sorted(r["methods"].items()))
        name = str(r[by])
        body.append(
            f"<tr><td>{escape(name)}</td><td>{r['audience']:,}</td><td>{r['sent']:,}</td>"
            f"<td>{r['failed']:,}</td><td>{r['unsubscribed']:,}</td><td>{r['bounced']:,}</td>"
            f"{_rate_cell(name, 'bounce_rate', r['bounce_rate'])}<td>{r['complaints']:,}</td>"
            f"{_rate_cell(name, 'complaint_rate', r['complaint_rate'])}"
            f"<td>{r['orders']:,}</td><td>{escape(revenue)}</td><td>{conv}</td>"
            f"<td>{escape(per_k or '–')}</td>"
            f'<td data-row="{escape(name)}" data-count="clicks">{r["clicks"]:,}</td>'
            f"{_rate_cell(name, 'click_to_buy', r['click_to_buy'])}"
            f"<td>{escape(methods or '–')}</td></tr>"
        )
    return f'<div class="wide"><table>{head}{"".join(body)}</table></div>'


CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2328;
max-width:1100px;margin:2em auto;padding:0 1em;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin:1.6em 0 .5em}
.sub{color:#59636e;margin-top:0}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:.35em .4em;border-bottom:1px solid #d1d9e0;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
.chart rect{fill:#1a7f37}.chart.time rect.all{fill:#9ec5f4}
.chart.time rect.attributed{fill:#0969da}.chart line{stroke:#8c959f}
svg.chart{max-width:100%;height:auto}.chart text{font-size:12px;fill:#1f2328}
.chart text.value{fill:#59636e}.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.6em 1em;
border-radius:6px}.empty{color:#59636e}.kpi{display:flex;gap:1.5em;flex-wrap:wrap}
.kpi div{background:#f6f8fa;border-radius:6px;padding:.6em 1em}.kpi b{display:block;font-size:1.3em}
.warn.stop{background:#ffebe9;border-color:#cf222e}.chart.rates rect{fill:#8c959f}
.chart.rates .near rect{fill:#d4a72c}.chart.rates .over rect{fill:#cf222e}
.chart line.limit{stroke:#1f2328;stroke-width:1.5;stroke-dasharray:4 3}
.chart text.limit{fill:#1f2328;font-size:11px}.wide{overflow-x:auto}
th,td{white-space:nowrap}td:last-child,th:last-child{white-space:normal}
th{white-space:normal;vertical-align:bottom}.chart.rates.clicks rect{fill:#0969da}
"""


def render_html(
    report: dict,
    by_list: dict,
    by_offer: dict,
    by_campaign: dict | None = None,
    extra: str = "",
) -> str:
    """The report page; ``by_list``, ``by_offer`` (and ``by_campaign``, for the bounce and
    complaint rates drawn per campaign) are reports for the same period; ``extra``:
    further sections (offer tests, where buyers come from), already HTML."""
    currency = main_currency(report)
    sections = []
    period = f"{report['since'] or 'the beginning'} to {report['until'] or 'today'}"
    totals = report["totals"]
    revenue = format_amounts(totals["revenue"], "none")
    unattributed = format_amounts(totals["unattributed"]["revenue"])
    sections.append(
        '<div class="kpi">'
        f"<div>orders<b>{totals['orders']:,}</b></div>"
        f"<div>revenue<b>{escape(revenue)}</b></div>"
        f"<div>unattributed<b>{escape(unattributed or 'none')}</b></div></div>"
    )
    if report["complaint_warnings"]:
        # Complaints first: past Gmail's limit, more sending makes everything else worse.
        warnings = []
        for w in report["complaint_warnings"]:
            level = (
                "warn complaint stop" if w["limit"] >= max(COMPLAINT_LIMITS) else "warn complaint"
            )
            warnings.append(
                f'<p class="{level}">{escape(complaint_warning_text(w), quote=False)}</p>'
            )
        sections.append("<h2>Complaints</h2>" + "".join(warnings))
    if currency:
        others = sorted(set(totals["revenue"]) - {currency})
        if others:
            sections.append(
                f'<p class="sub">Charts show {currency}; also earned in {", ".join(others)} '
                "(see the table; currencies are never converted).</p>"
            )
        lists_rev = [(r["list"], r["revenue"].get(currency, 0)) for r in by_list["rows"]]
        lists_k = [(r["list"], r["revenue_per_1000"].get(currency, 0)) for r in by_list["rows"]]
        offers_rev = [(r["offer"], r["revenue"].get(currency, 0)) for r in by_offer["rows"]]
        days = [
            (p["day"], p["revenue"], p["attributed"])
            for p in report["over_time"]
            if p["currency"] == currency
        ]
        sections += [
            _bar_chart("revenue-by-list", f"Revenue by list ({currency})", lists_rev, currency),
            _bar_chart(
                "per-1000-by-list",
                f"Revenue per 1,000 sent, by list ({currency})",
                lists_k,
                currency,
            ),
            _bar_chart("revenue-by-offer", f"Revenue by offer ({currency})", offers_rev, currency),
            _time_chart("revenue-over-time", f"Revenue per day ({currency})", days, currency),
        ]
    else:
        sections.append('<p class="empty">No revenue in this period.</p>')
    if by_list["lists_without_revenue"]:
        names = ", ".join(
            f"{escape(x['list'])} ({x['active']:,} active, {x['sent']:,} sent)"
            for x in by_list["lists_without_revenue"]
        )
        sections.append(
            f'<h2>Lists mailed that earned nothing</h2><p class="warn">{names}: mailed in this '
            "period, no attributed revenue.</p>"
        )
    if by_list["lists_not_mailed"]:
        names = ", ".join(
            f"{escape(x['list'])} ({x['active']:,} active)" for x in by_list["lists_not_mailed"]
        )
        sections.append(
            f'<h2>Lists not mailed</h2><p class="sub">{names}: no campaign of this period sent '
            "them anything, so they could not earn.</p>"
        )
    if by_list["lists_mailed_through_others"]:
        names = ", ".join(
            escape(mailed_through_text(x)) for x in by_list["lists_mailed_through_others"]
        )
        sections.append(
            f'<h2>Lists mailed through other lists</h2><p class="sub">{names}: no message '
            f"went through these lists, but their readers were mailed ({MAILED_THROUGH_NOTE}); "
            "their sales are credited to the list each message went through.</p>"
        )
    if by_campaign is not None and by_campaign["rows"]:
        sections += [
            _rate_chart(
                "complaint-rate-by-campaign",
                "Complaint rate by campaign (of messages sent)",
                [(r["campaign"], r["complaint_rate"]) for r in by_campaign["rows"]],
                COMPLAINT_LIMITS,
            ),
            _rate_chart(
                "bounce-rate-by-campaign",
                "Bounce rate by campaign (of messages tried)",
                [(r["campaign"], r["bounce_rate"]) for r in by_campaign["rows"]],
            ),
            _rate_chart(
                "click-to-buy-by-campaign",
                "Clicked deliveries that bought, by campaign (buy/click)",
                [(r["campaign"], r["click_to_buy"]) for r in by_campaign["rows"]],
                empty="No clicks recorded in this period.",
                kind=" clicks",
            ),
        ]
    sections.append(f"<h2>By {report['by']}</h2>{_table(report)}")
    for h in report["holdout"]:
        ci = h["ci95"]
        interval = f"95% interval {ci[0]:+.2%} to {ci[1]:+.2%}" if ci else "no interval"
        sections.append(
            f"<h2>Lift of {escape(h['campaign'])} (holdout {h['holdout']:.0%})</h2>"
            f"<p>Mailed: {h['mailed_buyers']:,} of {h['mailed']:,} bought "
            f"({h['mailed_rate']:.2%}); held out: {h['held_out_buyers']:,} of {h['held_out']:,} "
            f"({h['held_out_rate']:.2%}). Difference {h['difference']:+.2%}, {interval}.</p>"
        )
    sections.append(extra)
    data = json.dumps(
        {"report": report, "by_list": by_list, "by_offer": by_offer, "by_campaign": by_campaign},
        ensure_ascii=False,
    ).replace("<", "\\u003c")  # nothing in the data can close or open a tag
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>listkit report</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body><h1>Which lists make money</h1>"
        f'<p class="sub">listkit report, {escape(period)}</p>{"".join(sections)}'
        f'<script type="application/json" id="listkit-report">{data}</script></body></html>\n'
    )
