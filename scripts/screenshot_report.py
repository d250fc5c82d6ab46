"""Render the demo's HTML report in headless Chromium, save screenshots, check the charts.

Runs the demo quietly (or takes a workspace), writes its HTML report, opens it in headless Chromium
(Debian package `chromium`; scripts/chromium.py installs it when missing and run as root),
saves a PNG and the rendered DOM, and checks that every bar drawn in the
charts carries the figure `listkit report --json` gives, and so does every
bounce and complaint rate drawn (the per-campaign rate charts and the table's
rate cells, figure and label), every complaint warning, and the clicks drawn:
the table's clicks and buy/click cells and the buy/click chart per campaign.
Then it lays the page out at a phone's width (390 px) and a laptop's (1280 px),
saves a full-page PNG of each (report-390.png, report-1280.png) and checks, as
Chromium laid them out, that the page never scrolls sideways (its scrollWidth is
at most the viewport's width) and that no chart text is drawn under 11 px.
Exits 1 on any mismatch.

    .venv/bin/python scripts/screenshot_report.py [--out bench/out] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path

from chromium import FLAGS as CHROMIUM_FLAGS
from chromium import chromium, layout, screenshot
from click.testing import CliRunner

from listkit.cli import cli
from listkit.demo import run_demo
from listkit.sales.report_html import main_currency
from listkit.sales.reports import complaint_warning_text

FLAGS = ["--headless", *CHROMIUM_FLAGS, "--disable-quic"]


def report_json(root: Path, by: str) -> dict:
    result = CliRunner().invoke(cli, ["--workspace", str(root), "report", "--by", by, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _chart(dom: str, chart: str) -> str:
    match = re.search(rf'<div id="{chart}".*?</section>', dom, re.S)
    if match is None:
        raise SystemExit(f"chart {chart} is not in the rendered page")
    return match.group(0)


def bars(dom: str, chart: str) -> dict[str, int]:
    return {
        label: int(value)
        for label, value in re.findall(
            r'data-label="([^"]+)" data-value="(-?\d+)"', _chart(dom, chart)
        )
    }


def rate_bars(dom: str, chart: str) -> dict[str, float]:
    found = re.findall(
        r'<div class="bar rate[^"]*" data-label="([^"]+)" data-rate="([^"]+)">.*?'
        r'<span class="value">([^<]*)</span>',
        _chart(dom, chart),
        re.S,
    )
    out = {}
    for label, value, shown in found:
        if shown != f"{float(value):.2%}":
            raise SystemExit(f"chart {chart}: {label} is labelled {shown}, its value is {value}")
        out[label] = float(value)
    return out


MIN_TEXT_PX = 11


def check_layout(html: str, out: Path) -> bool:
    """At 390 and 1280 px: no sideways scroll, no chart text under 11 px; a PNG of each."""
    failed = False
    for width in (390, 1280):
        page = layout(html, width)
        small = [t for t in page["texts"] if t["chart"] and t["size"] < MIN_TEXT_PX]
        chart_sizes = [t["size"] for t in page["texts"] if t["chart"]]
        fits = page["scroll_width"] <= page["viewport"] == width
        failed |= not fits or bool(small) or not chart_sizes
        print(
            f"layout at {width}px: {'ok' if fits else 'SIDEWAYS SCROLL'} scrollWidth "
            f"{page['scroll_width']} for a viewport of {page['viewport']}"
            + (f" (wider: {page['wider_than_viewport']})" if not fits else "")
        )
        print(
            f"chart text at {width}px: {'ok' if not small and chart_sizes else 'TOO SMALL'} "
            f"{len(chart_sizes)} texts, smallest {min(chart_sizes, default=0)}px"
            + (f" {small[:5]}" if small else "")
        )
        full = page["scroll_height"]
        png = (out / f"report-{width}.png").resolve()
        screenshot(html, width, png, full, full=full)
        print(f"screenshot at {width}px: {png} ({png.stat().st_size:,} bytes, {full}px tall)")
        # The same page in screen-sized parts, to look at in an image viewer.
        step = 1400 if width < 800 else 1000
        for n, top in enumerate(range(0, full, step), 1):
            part = (out / f"report-{width}-part{n}.png").resolve()
            screenshot(html, width, part, min(step, full - top), top=top, full=full)
    return failed


def rate_cells(dom: str) -> dict[tuple[str, str], float | None]:
    """(row, rate) -> the rate in the table's cell; the text shown must say the same."""
    out = {}
    for row, name, value, shown in re.findall(
        r'<td data-row="([^"]+)" data-rate="([a-z_]+)" data-value="([^"]*)">([^<]*)</td>', dom
    ):
        rate = float(value) if value else None
        if shown != ("–" if rate is None else f"{rate:.2%}"):
            raise SystemExit(f"table: {row} {name} shows {shown}, its value is {value!r}")
        out[(row, name)] = rate
    return out


def warnings(dom: str) -> list[str]:
    return [unescape(text) for text in re.findall(r'<p class="warn complaint[^"]*">(.*?)</p>', dom)]


def check_rates(dom: str, by_list: dict, by_campaign: dict) -> bool:
    """The drawn bounce and complaint rates and the warnings, against the JSON reports."""
    failed = False
    checks = {
        "complaint-rate-by-campaign": {
            r["campaign"]: r["complaint_rate"]
            for r in by_campaign["rows"]
            if r["complaint_rate"] is not None
        },
        "bounce-rate-by-campaign": {
            r["campaign"]: r["bounce_rate"]
            for r in by_campaign["rows"]
            if r["bounce_rate"] is not None
        },
        "click-to-buy-by-campaign": {
            r["campaign"]: r["click_to_buy"]
            for r in by_campaign["rows"]
            if r["click_to_buy"] is not None
        },
    }
    for chart, expected in checks.items():
        drawn = rate_bars(dom, chart)
        failed |= drawn != expected
        print(f"{chart}: {'ok' if drawn == expected else 'MISMATCH'} drawn={drawn} json={expected}")
    expected_cells = {
        (r["list"], name): r[name]
        for r in by_list["rows"]
        for name in ("bounce_rate", "complaint_rate", "click_to_buy")
    }
    cells = rate_cells(dom)
    failed |= cells != expected_cells
    print(f"table rates: {'ok' if cells == expected_cells else 'MISMATCH'} drawn={cells}")
    clicks = {
        row: int(value.replace(",", ""))
        for row, value in re.findall(
            r'<td data-row="([^"]+)" data-count="clicks">([^<]*)</td>', dom
        )
    }
    expected_clicks = {r["list"]: r["clicks"] for r in by_list["rows"]}
    failed |= clicks != expected_clicks
    print(f"table clicks: {'ok' if clicks == expected_clicks else 'MISMATCH'} drawn={clicks}")
    expected_warnings = [complaint_warning_text(w) for w in by_list["complaint_warnings"]]
    shown = warnings(dom)
    failed |= shown != expected_warnings
    print(f"complaint warnings: {'ok' if shown == expected_warnings else 'MISMATCH'} {shown}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument(
        "--workspace", type=Path, help="Report on this workspace instead of a fresh demo."
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.workspace.resolve() if args.workspace else run_demo(quiet=True)
    html = args.out.resolve() / "report.html"
    result = CliRunner().invoke(cli, ["--workspace", str(root), "report", "--html", str(html)])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    browser = chromium()
    png = (args.out / "report.png").resolve()
    with tempfile.TemporaryDirectory() as profile:
        common = [browser, *FLAGS, f"--user-data-dir={profile}"]
        subprocess.run(
            [*common, f"--screenshot={png}", "--window-size=1280,2000", html.as_uri()],
            check=True,
            capture_output=True,
            timeout=120,
        )
        dom = subprocess.run(
            [*common, "--dump-dom", html.as_uri()],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    (args.out / "report.dom.html").write_text(dom)
    by_list, by_offer = report_json(root, "list"), report_json(root, "offer")
    rates_failed = check_rates(dom, by_list, report_json(root, "campaign"))
    rates_failed |= check_layout(html.read_text(), args.out)
    currency = main_currency(by_list)
    if currency is None:
        print("no revenue in the report: nothing drawn to check")
        return 0 if "No revenue in this period." in dom and not rates_failed else 1
    checks = {
        "revenue-by-list": {r["list"]: r["revenue"].get(currency, 0) for r in by_list["rows"]},
        "per-1000-by-list": {
            r["list"]: r["revenue_per_1000"].get(currency, 0) for r in by_list["rows"]
        },
        "revenue-by-offer": {r["offer"]: r["revenue"].get(currency, 0) for r in by_offer["rows"]},
        "revenue-over-time": {
            p["day"]: p["revenue"] for p in by_list["over_time"] if p["currency"] == currency
        },
    }
    failed = rates_failed
    for chart, expected in checks.items():
        drawn = bars(dom, chart)
        status = "ok" if drawn == expected else "MISMATCH"
        failed |= drawn != expected
        print(f"{chart}: {status} drawn={drawn} json={expected}")
    print(f"screenshot: {png} ({png.stat().st_size:,} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
