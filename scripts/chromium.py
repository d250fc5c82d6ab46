"""Debian's headless Chromium for the scripts that drive pages in it.

``chromium()`` finds the browser, or (as root, with apt-get) installs the
Debian package ``chromium`` when it is missing; ``FLAGS`` are the switches
both scripts run it with: no sandbox (root in a container), no GPU, nothing
fetched in the background, no first-run pages, no scrollbars in screenshots.
``scripts/screenshot_report.py`` runs the binary itself and adds
``--headless``; ``scripts/browser_pages.py`` hands it to playwright, which does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The path of chromium, installed with apt-get when missing (as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("chromium is missing: install the Debian package chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium")


# Measures a page as laid out: the viewport, how wide the document is (sideways
# scroll), and every visible text at the size it is drawn (an SVG scaled down to fit
# draws its 12px text smaller: its screen CTM says how much). Runs in the page's window.
LAYOUT_JS = """
(() => {
  const root = document.documentElement;
  const shown = (el) => el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== "hidden";
  const texts = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !shown(el) || el.closest("script, style, title")) continue;
    const ctm = el instanceof SVGGraphicsElement ? el.getScreenCTM() : null;
    const scale = ctm ? Math.hypot(ctm.a, ctm.b) : 1;
    const size = parseFloat(getComputedStyle(el).fontSize) * scale;
    texts.push({text: el.textContent.trim().slice(0, 40), size: Math.round(size * 100) / 100,
                chart: !!el.closest(".chart"), tag: el.tagName.toLowerCase()});
  }
  const wide = [...document.querySelectorAll("body *")]
    .filter((el) => shown(el) && el.getBoundingClientRect().right > root.clientWidth + 0.5
            && !el.closest(".wide"))
    .slice(0, 10)
    .map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
         + " right=" + Math.round(el.getBoundingClientRect().right));
  return {viewport: root.clientWidth, scroll_width: root.scrollWidth,
          scroll_height: root.scrollHeight, texts, wider_than_viewport: wide};
})()
"""


def _framed(html: str, width: int, height: int, probe: bool, top: int = 0, full: int = 0) -> str:
    """A page holding ``html`` in a ``width`` x ``height`` iframe (srcdoc: same origin).
    Chromium's window is at least 500 px wide, so a phone's 390 px viewport is the
    frame's; with ``probe``, LAYOUT_JS runs in the frame once it has loaded and its
    answer is written into the outer page (``<pre id="layout-probe">``)."""
    import html as html_lib
    import json

    script = ""
    if probe:
        script = (
            "<script>const f = document.querySelector('iframe');"
            "f.addEventListener('load', () => {"
            f"const r = f.contentWindow.eval({json.dumps(LAYOUT_JS)});"
            "const pre = document.createElement('pre'); pre.id = 'layout-probe';"
            "pre.textContent = JSON.stringify(r); document.body.appendChild(pre);});</script>"
        )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><style>html,body{margin:0;'
        "background:#d0d7de}iframe{display:block;border:0;background:#fff}</style></head>"
        f'<body><div style="height:{height}px;overflow:hidden"><iframe width="{width}" '
        f'height="{max(full, height)}" style="margin-top:-{top}px" '
        f'srcdoc="{html_lib.escape(html, quote=True)}"></iframe></div>{script}</body></html>'
    )


def _run(page_html: str, args: list[str], window: tuple[int, int]) -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(page_html)
        return subprocess.run(
            [
                chromium(),
                "--headless",
                *FLAGS,
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={window[0]},{window[1]}",
                "--virtual-time-budget=5000",
                *args,
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout


def layout(html: str, width: int, height: int = 900) -> dict:
    """``LAYOUT_JS``'s measurements of the page ``html`` (its text) laid out in a
    viewport ``width`` px wide, in headless Chromium."""
    import html as html_lib
    import json
    import re

    dom = _run(_framed(html, width, height, True), ["--dump-dom"], (max(width, 500), height))
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError("the layout probe did not run in chromium")
    return json.loads(html_lib.unescape(found.group(1)))


def screenshot(
    html: str, width: int, png, height: int | None = None, *, top: int = 0, full: int = 0
) -> None:
    """A PNG of the page ``html`` laid out ``width`` px wide: ``height`` px of it from
    ``top`` down (a page ``full`` px tall), or the whole page; a window wider than
    ``width`` shows grey beside it."""
    if height is None:
        height = full = layout(html, width)["scroll_height"]
    page = _framed(html, width, height, False, top, full)
    _run(page, [f"--screenshot={png}"], (max(width, 500), height))
