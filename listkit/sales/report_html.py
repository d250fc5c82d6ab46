"""The HTML report: one self-contained file (no network), charts drawn in HTML and CSS.

The rule: the page fits a 390 px phone as well as a laptop (no sideways scroll,
no chart text under 11 px, as Chromium lays it out: scripts/screenshot_report.py
and the report tests measure it). Every bar carries its figure in
``data-value`` (minor units) and the whole report is embedded as JSON
(``<script type="application/json" id="listkit-report">``), so a script can
check what is drawn against what ``listkit report --json`` says.
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
    skipped_for_reader_text,
)

# Where the rate charts' scales end at least: bounce rates past 2% already hurt a
# sender's reputation, complaint rates past Gmail's 0.3% stop the mail; a rate of
# 0.04% is then a sliver, as it should be. Buy/click is a share of 100%.
BOUNCE_SCALE, COMPLAINT_SCALE = 0.05, 0.005

# Charts are HTML and CSS, not SVG: an SVG drawn for a laptop and scaled down to a
# phone's width scales its text down with it (4 px on a 390 px screen), while HTML
# text keeps its size and the bars take whatever width is left (and a screen reader
# reads the figures as text).


def _empty(title: str, text: str) -> str:
    return f'<section><h2>{escape(title)}</h2><p class="empty">{text}</p></section>'


def _pct_width(value: float, top: float) -> str:
    """A bar's width as a share of its track: at least a sliver when above zero."""
    if value <= 0 or top <= 0:
        return "0%"
    return f"max(2px, {min(100.0, 100 * value / top):.2f}%)"


def _bar_chart(chart_id: str, title: str, items: list[tuple[str, int]], currency: str) -> str:
    if not items:
        return _empty(title, "No data in this period.")
    top = max(v for _k, v in items)
    bars = "".join(
        f'<div class="bar" data-label="{escape(label)}" data-value="{value}" '
        f'data-currency="{currency}"><span class="label">{escape(label)}</span>'
        f'<span class="track"><span class="fill" style="width:{_pct_width(value, top)}">'
        f'</span></span><span class="value">{escape(format_minor(value, currency))}</span></div>'
        for label, value in items
    )
    return (
        f'<section><h2>{escape(title)}</h2><div id="{chart_id}" class="chart bars">'
        f"{bars}</div></section>"
    )


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _short_day(day: str) -> str:
    """``2026-11-03`` -> ``3 Nov``: short enough to stand under a bar."""
    return f"{int(day[8:10])} {MONTHS[int(day[5:7]) - 1]}"


def _time_chart(
    chart_id: str, title: str, points: list[tuple[str, int, int]], currency: str
) -> str:
    """Revenue per day: a column per day, its attributed part drawn darker. With a few
    days each column carries its figure and day (on a wide screen); with many, the
    first and last day name the axis."""
    if not points:
        return _empty(title, "No sales in this period.")
    top = max(v for _d, v, _a in points)
    few = " few" if len(points) <= 10 else ""
    columns = []
    for day, value, attributed in points:
        money = escape(format_minor(value, currency))
        height = _pct_width(value, top).replace("2px", "1px")
        share = _pct_width(attributed, value)
        columns.append(
            f'<div class="col"><div class="bar" data-label="{day}" data-value="{value}" '
            f'data-attributed="{attributed}" data-currency="{currency}" '
            f'title="{day}: {money}" style="height:{height}">'
            f'<span class="tick value">{money}</span>'
            f'<span class="attributed" style="height:{share}"></span></div>'
            f'<span class="tick day">{_short_day(day)}</span></div>'
        )
    return (
        f'<section><h2>{escape(title)}</h2><div id="{chart_id}" class="chart time{few}">'
        '<p class="legend">highest day '
        f"{escape(format_minor(top, currency))} "
        '<span class="key attributed"></span>attributed '
        '<span class="key all"></span>unattributed</p>'
        f'<div class="plot">{"".join(columns)}</div>'
        f'<p class="ends"><span>{points[0][0]}</span><span>{points[-1][0]}</span></p>'
        "</div></section>"
    )


def _rate_chart(
    chart_id: str,
    title: str,
    items: list[tuple[str, float | None]],
    limits: tuple = (),
    empty: str = "Nothing sent in this period.",
    kind: str = "",
    floor: float = 0.0,
) -> str:
    """A rate per row (a fraction, shown as a percentage), with dashed lines at ``limits``.

    Bars are scaled against the largest of the rates, the limits (with room past
    them) and ``floor``: a sensible maximum for the figure, so that a tiny rate
    draws a tiny bar, not a full one because every rate is tiny. The axis says
    where the scale ends."""
    items = [(label, rate) for label, rate in items if rate is not None]
    if not items:
        return _empty(title, empty)
    top = max([rate for _k, rate in items] + [x * 1.25 for x in limits] + [floor]) or 1
    marks = "".join(
        f'<span class="limit" style="left:{100 * limit / top:.2f}%"></span>' for limit in limits
    )
    bars = []
    for label, rate in items:
        over = next((x for x in sorted(limits, reverse=True) if rate > x), None)
        cls = "" if over is None else (" over" if over == max(limits) else " near")
        bars.append(
            f'<div class="bar rate{cls}" data-label="{escape(label)}" data-rate="{rate!r}">'
            f'<span class="label">{escape(label)}</span><span class="track">'
            f'<span class="fill" style="width:{_pct_width(rate, top)}"></span>{marks}</span>'
            f'<span class="value">{rate:.2%}</span></div>'
        )
    # The scale's ends on an axis; the limits in words (labels at the lines collide on a
    # phone when the rates are far above the limits).
    axis = (
        '<span class="tick" style="left:0">0%</span>'
        f'<span class="tick" style="left:100%">{_pct_label(top)}</span>'
    )
    legend = (
        f'<p class="legend">Dashed lines: {" and ".join(f"{x:.1%}" for x in sorted(limits))}.</p>'
        if limits
        else ""
    )
    return (
        f'<section><h2>{escape(title)}</h2><div id="{chart_id}" class="chart bars rates{kind}" '
        f'data-scale="{top!r}">{"".join(bars)}'
        f'<div class="axis"><span class="label"></span><span class="track">{axis}</span>'
        f'<span class="value"></span></div>{legend}</div></section>'
    )


def _pct_label(x: float) -> str:
    """0.05 -> ``5%``, 0.005 -> ``0.5%``: the end of a rate chart's scale."""
    return f"{x * 100:.3g}%"


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
max-width:1100px;margin:2em auto;padding:0 1em;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin:1.6em 0 .5em}
.sub{color:#59636e;margin-top:0}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:.35em .4em;border-bottom:1px solid #d1d9e0;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.6em 1em;
border-radius:6px}.empty{color:#59636e}.kpi{display:flex;gap:1em 1.5em;flex-wrap:wrap}
.kpi div{background:#f6f8fa;border-radius:6px;padding:.6em 1em}.kpi b{display:block;font-size:1.3em}
.warn.stop{background:#ffebe9;border-color:#cf222e}.wide{overflow-x:auto}
.wide table{overflow-wrap:normal}.wide td:last-child{min-width:8em}
.rates .legend{margin:.2em 0 0;color:#59636e}
th,td{white-space:nowrap}td:last-child,th:last-child{white-space:normal}
th{white-space:normal;vertical-align:bottom}
.chart{font-size:13px}
.bars .bar,.bars .axis{display:grid;grid-template-columns:minmax(5em,11em) minmax(0,1fr) 7.5em;
gap:.6em;align-items:center;margin:.35em 0}
.bars .label{overflow-wrap:anywhere}.bars .value{color:#59636e;white-space:nowrap}
.bars .track{position:relative;height:20px}
.bars .fill{display:block;height:100%;background:#1a7f37;border-radius:3px}
.rates .fill{background:#8c959f}.rates .near .fill{background:#d4a72c}
.rates .over .fill{background:#cf222e}.rates.clicks .fill{background:#0969da}
.rates .limit{position:absolute;top:-3px;bottom:-3px;border-left:1.5px dashed #1f2328}
.axis{margin-top:0}.axis .track{height:1.4em}
.axis .tick{position:absolute;top:0;transform:translateX(-50%);font-size:11px;color:#59636e;
white-space:nowrap}.axis .tick:first-child{transform:none}
.axis .tick:last-child{transform:translateX(-100%)}
.time .legend{margin:0 0 .4em;color:#59636e}
.time .key{display:inline-block;width:12px;height:12px;margin:0 .3em 0 .8em;vertical-align:-1px}
.time .key.attributed,.time .bar .attributed{background:#0969da}
.time .key.all,.time .bar{background:#9ec5f4}
.time .plot{display:flex;align-items:stretch;gap:2px;height:200px;
border-bottom:1px solid #8c959f}
.time .col{flex:1 1 0;min-width:0;display:flex;flex-direction:column;justify-content:flex-end;
align-items:center}
.time .bar{width:100%;max-width:80px;display:flex;align-items:flex-end;position:relative}
.time .bar .attributed{display:block;width:100%}
.time .tick{display:none;font-size:11px;color:#59636e;white-space:nowrap}
.time.few .tick.value{display:block;position:absolute;bottom:100%;left:50%;
transform:translateX(-50%);margin-bottom:2px}.time.few .plot{padding-top:1.5em}
.time .ends{display:flex;justify-content:space-between;margin:.3em 0 0;color:#59636e}
@media (min-width:700px){.time.few .plot{height:230px}
.time.few .col{position:relative}.time.few .tick.day{display:block;position:absolute;
bottom:-1.6em}.time.few .plot{margin-bottom:1.8em}.time.few .ends{display:none}}
@media (max-width:699px){.time.few .tick.value{display:none}
.bars .bar,.bars .axis{grid-template-columns:minmax(0,1fr) auto;gap:.1em .6em}
.bars .label{grid-column:1/-1}.bars .axis .label{display:none}.bars .axis .value{display:none}}
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
    sections = [
        _kpis(report["totals"]),
        # Complaints first: past Gmail's limit, more sending makes everything else worse.
        _complaints(report["complaint_warnings"]),
        _revenue_charts(report, by_list, by_offer),
        _idle_lists(by_list),
        _rate_charts(by_campaign),
        f"<h2>By {report['by']}</h2>{_table(report)}",
        *(_lift(h) for h in report["holdout"]),
        _skipped(report.get("skipped_for_reader")),
        extra,
    ]
    data = json.dumps(
        {"report": report, "by_list": by_list, "by_offer": by_offer, "by_campaign": by_campaign},
        ensure_ascii=False,
    ).replace("<", "\\u003c")  # nothing in the data can close or open a tag
    period = f"{report['since'] or 'the beginning'} to {report['until'] or 'today'}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>listkit report</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body><h1>Which lists make money</h1>"
        f'<p class="sub">listkit report, {escape(period)}</p>{"".join(sections)}'
        f'<script type="application/json" id="listkit-report">{data}</script></body></html>\n'
    )


def _kpis(totals: dict) -> str:
    """The totals: orders, revenue, and the revenue no campaign is credited with."""
    revenue = format_amounts(totals["revenue"], "none")
    unattributed = format_amounts(totals["unattributed"]["revenue"])
    return (
        '<div class="kpi">'
        f"<div>orders<b>{totals['orders']:,}</b></div>"
        f"<div>revenue<b>{escape(revenue)}</b></div>"
        f"<div>unattributed<b>{escape(unattributed or 'none')}</b></div></div>"
    )


def _complaints(warnings: list[dict]) -> str:
    """The campaigns whose complaint rate passed a limit; past Gmail's, a stop sign."""
    if not warnings:
        return ""
    paragraphs = []
    for w in warnings:
        level = "warn complaint stop" if w["limit"] >= max(COMPLAINT_LIMITS) else "warn complaint"
        paragraphs.append(
            f'<p class="{level}">{escape(complaint_warning_text(w), quote=False)}</p>'
        )
    return "<h2>Complaints</h2>" + "".join(paragraphs)


def _revenue_charts(report: dict, by_list: dict, by_offer: dict) -> str:
    """Revenue by list, per 1,000 sent by list, by offer and per day, in the currency
    with the most revenue (the others are named: currencies are never converted)."""
    currency = main_currency(report)
    if not currency:
        return '<p class="empty">No revenue in this period.</p>'
    sections = []
    others = sorted(set(report["totals"]["revenue"]) - {currency})
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
    return "".join(sections)


def _idle_lists(by_list: dict) -> str:
    """The lists that earned nothing: mailed, not mailed, or mailed through other lists."""
    sections = []
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
    return "".join(sections)


def _rate_charts(by_campaign: dict | None) -> str:
    """Complaint, bounce and buy/click rates per campaign, against their limits."""
    if by_campaign is None or not by_campaign["rows"]:
        return ""
    rows = by_campaign["rows"]
    return "".join(
        [
            _rate_chart(
                "complaint-rate-by-campaign",
                "Complaint rate by campaign (of messages sent)",
                [(r["campaign"], r["complaint_rate"]) for r in rows],
                COMPLAINT_LIMITS,
                floor=COMPLAINT_SCALE,
            ),
            _rate_chart(
                "bounce-rate-by-campaign",
                "Bounce rate by campaign (of messages tried)",
                [(r["campaign"], r["bounce_rate"]) for r in rows],
                floor=BOUNCE_SCALE,
            ),
            _rate_chart(
                "click-to-buy-by-campaign",
                "Clicked deliveries that bought, by campaign (buy/click)",
                [(r["campaign"], r["click_to_buy"]) for r in rows],
                empty="No clicks recorded in this period.",
                kind=" clicks",
                floor=1.0,
            ),
        ]
    )


def _skipped(entries: list[dict] | None) -> str:
    """Selling messages skipped for their reader (quiet period, frequency cap), if any."""
    if not entries:
        return ""
    return (
        "<h2>Skipped for the reader</h2><p>Selling messages that "
        "LISTKIT_QUIET_AFTER_PURCHASE or LISTKIT_FREQUENCY kept back past their deadline: "
        f"{escape(skipped_for_reader_text(entries))}.</p>"
    )


def _lift(h: dict) -> str:
    """A holdout campaign: the purchase rates of the mailed and the held out."""
    ci = h["ci95"]
    interval = f"95% interval {ci[0]:+.2%} to {ci[1]:+.2%}" if ci else "no interval"
    return (
        f"<h2>Lift of {escape(h['campaign'])} (holdout {h['holdout']:.0%})</h2>"
        f"<p>Mailed: {h['mailed_buyers']:,} of {h['mailed']:,} bought "
        f"({h['mailed_rate']:.2%}); held out: {h['held_out_buyers']:,} of {h['held_out']:,} "
        f"({h['held_out_rate']:.2%}). Difference {h['difference']:+.2%}, {interval}.</p>"
    )
