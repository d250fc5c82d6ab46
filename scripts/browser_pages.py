"""Drive the reader's pages in headless Chromium: unsubscribe, signup form, confirmation.

Sets up a workspace in a temporary folder, sends a campaign to a local
capture server, starts `listkit serve` on loopback, then, in Debian's
chromium (driven by playwright's Python package; no browser is downloaded):

- opens the unsubscribe link of a received message, clicks "Unsubscribe from
  <list>", checks the answer (the list left, the campaign stopped, the other
  list kept, "everything" offered) and that the membership is unsubscribed;
- sends another reader's one-click POST (RFC 8058, as a mail client does) and
  shows its answer; opens that used link again ("already unsubscribed", with
  "everything"), clicks "Unsubscribe from everything"; opens a cut link (a
  page that says what to do, status 404);
- opens a blog page with the snippet `listkit form` prints, fills it in,
  submits, checks the answer; opens the confirmation link from the mail that
  arrives, checks the address is still pending, clicks the button, checks it
  is active.

It does all this twice, in a desktop window (1280 CSS pixels wide) and at a
phone's size (390 CSS pixels wide, touch), and on every page checks what a
reader on that device meets: a viewport, no sideways scrolling, tap targets
of at least 44 pixels on the phone, a label for every input, text contrast of
at least 4.5:1, text of at least 11 pixels, inputs at 16 pixels or more
(smaller ones make phones zoom in), and, on the unsubscribe pages, a link back to the site. Saves a
screenshot of each page (`desktop-N-*.png`, `phone-N-*.png`) and exits 1 on
any mismatch.

    .venv/bin/python scripts/browser_pages.py [--out bench/out/pages]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller
from chromium import FLAGS, chromium
from click.testing import CliRunner

from listkit.cli import cli
from listkit.send.sender import send_campaign
from listkit.workspace import Workspace, init_workspace


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos[0], envelope.original_content or envelope.content))
        return "250 OK"

    def to(self, address: str):
        for rcpt, data in self.messages:
            if rcpt == address:
                return message_from_bytes(data, policy=default)
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_run(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--workspace", str(root), *args])
    if result.exit_code != 0:
        raise SystemExit(f"listkit {' '.join(args)} failed:\n{result.output}")
    return result.output


def statuses_of(root: Path, email: str) -> dict[str, str]:
    """{list slug: membership status} of ``email``."""
    ws = Workspace(root)
    try:
        return dict(
            ws.db.execute(
                """SELECT l.slug, m.status FROM memberships m
                   JOIN subscribers s ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id
                   WHERE s.key = ?""",
                [email],
            ).fetchall()
        )
    finally:
        ws.close()


def status_of(root: Path, email: str) -> str | dict[str, str]:
    """The membership status of a one-list ``email``; a dict for one on several lists."""
    found = statuses_of(root, email)
    if len(found) > 1:
        return found
    return next(iter(found.values()), "-")


def check(ok: bool, what: str, problems: list[str]) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        problems.append(what)


# A desktop window, and a phone (iPhone 12/13/14's CSS size, touch, 3x pixels).
SIZES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 3,
        "is_mobile": True,
        "has_touch": True,
    },
}
# The smallest tap target a finger hits reliably: 44 CSS pixels (WCAG 2.5.5, Apple's HIG).
TAP = 44
# The smallest text a reader should have to read, in CSS pixels.
SMALLEST_TEXT = 11
# Where the reader's pages lead back to (LISTKIT_SITE_URL).
SITE = "https://blog.example.org/"


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS `rgb(...)` colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(x) / 255 for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


LOOK = """(site) => {
  const out = {overflow: document.documentElement.scrollWidth - window.innerWidth,
               viewport: !!document.querySelector('meta[name=viewport]'),
               targets: [], texts: []};
  const bg = (el) => { for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; }
    return 'rgb(255, 255, 255)'; };
  for (const el of document.querySelectorAll('button, input, a[href]')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.right < 0 || r.bottom < 0) continue;  // hidden
    if (el.type === 'hidden') continue;
    out.targets.push({what: el.outerHTML.slice(0, 60), w: r.width, h: r.height,
                      label: el.tagName !== 'INPUT' || !!(el.labels && el.labels.length)});
  }
  for (const el of document.querySelectorAll('h1, p, label, strong, button, input, a')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right < 0) continue;
    const cs = getComputedStyle(el);
    out.texts.push({what: el.tagName + ' ' + (el.innerText || el.value || '').slice(0, 30),
                    fg: cs.color, bg: bg(el), size: parseFloat(cs.fontSize)});
  }
  out.back = [...document.querySelectorAll('a[href]')].some(a => a.href === site);
  return out;
}"""


def look_at(page, name: str, width: str, problems: list[str], back: bool = False) -> None:
    """What a reader on this device meets: no sideways scrolling, targets big enough
    for a finger, labelled inputs, text readable (contrast 4.5:1, 16px inputs on a
    phone so that it does not zoom in when one is tapped)."""
    seen = page.evaluate(LOOK, SITE)
    check(seen["viewport"], f"{width} {name}: has a viewport for phones", problems)
    check(seen["overflow"] <= 0, f"{width} {name}: no sideways scrolling", problems)
    small = [
        f"{t['what']} {t['w']:.0f}x{t['h']:.0f}"
        for t in seen["targets"]
        if width == "phone" and min(t["w"], t["h"]) < TAP
    ]
    check(not small, f"{width} {name}: tap targets at least {TAP}px {small}", problems)
    unlabelled = [t["what"] for t in seen["targets"] if not t["label"]]
    check(not unlabelled, f"{width} {name}: every input has a label {unlabelled}", problems)
    faint = [
        f"{t['what']} {contrast(t['fg'], t['bg']):.1f}:1"
        for t in seen["texts"]
        if contrast(t["fg"], t["bg"]) < 4.5
    ]
    check(not faint, f"{width} {name}: text contrast at least 4.5:1 {faint}", problems)
    tiny = [
        t["what"]
        for t in seen["texts"]
        if width == "phone" and t["what"].startswith("INPUT") and t["size"] < 16
    ]
    check(not tiny, f"{width} {name}: inputs at 16px or more (no zoom on tap) {tiny}", problems)
    small_text = [
        f"{t['what']} {t['size']:.0f}px" for t in seen["texts"] if t["size"] < SMALLEST_TEXT
    ]
    check(not small_text, f"{width} {name}: text at least {SMALLEST_TEXT}px {small_text}", problems)
    if back:
        check(seen["back"], f"{width} {name}: a link back to the site", problems)


def drive(page, width, *, root, base, blog, links, capture, out, problems) -> None:
    """The reader's way through the pages at one device size; screenshots `<width>-N-*.png`.

    ``links``: two readers' unsubscribe links (each on blog and shop), one
    for the page's button, one for a mail client's one-click POST."""
    reader = f"reader-{width}@example.com"
    (by_button, button_url), (by_one_click, one_click_url) = links

    def shot(name: str, back: bool = False) -> None:
        page.screenshot(path=str(out / f"{width}-{name}.png"), full_page=True)
        look_at(page, name, width, problems, back)

    def says(*words: str) -> bool:
        text = " ".join(page.inner_text("body").split())
        return all(w in text for w in words)

    page.goto(button_url)
    shot("1-unsubscribe", back=True)
    check(
        page.get_by_role("heading").inner_text() == "Unsubscribe from The Field Notes?",
        "the unsubscribe page names the list",
        problems,
    )
    before = status_of(root, by_button)
    check(before == {"blog": "active", "shop": "active"}, "opening it changed nothing", problems)
    page.get_by_role("button", name="Unsubscribe from The Field Notes").click()
    page.wait_for_load_state()
    shot("2-unsubscribed", back=True)
    left = (
        "You are unsubscribed from The Field Notes",
        "You left The Field Notes.",
        "This campaign and its follow-ups will not reach you, on any list.",
        "You are still on The Shop.",
    )
    check(says(*left), "the button's answer says what happened", problems)
    check(
        page.get_by_role("button", name="Unsubscribe from everything").count() == 1,
        "the answer offers everything",
        problems,
    )
    check(
        status_of(root, by_button) == {"blog": "unsubscribed", "shop": "active"},
        f"{by_button} left blog and stays on shop",
        problems,
    )

    # A mail client's one-click POST (RFC 8058): no page of ours asked for it.
    answer = page.request.post(
        one_click_url,
        data="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    check(answer.status == 200, f"the one-click POST answers 200 ({answer.status})", problems)
    page.goto(base + "/healthz")  # the answer shown as from the service's own address
    page.set_content(answer.text())
    shot("3-one-click-result", back=True)
    check(says(*left), "the one-click answer says what happened", problems)
    check(
        status_of(root, by_one_click) == {"blog": "unsubscribed", "shop": "active"},
        f"{by_one_click} left blog and stays on shop",
        problems,
    )
    page.goto(one_click_url)
    shot("4-already-unsubscribed", back=True)
    check(
        says("You are already unsubscribed from The Field Notes", "You are still on The Shop."),
        "the used link says so instead of asking again",
        problems,
    )
    page.get_by_role("button", name="Unsubscribe from everything").click()
    page.wait_for_load_state()
    shot("5-unsubscribed-everything", back=True)
    check(
        says("You are unsubscribed from everything", "nothing more from us, on any list"),
        "everything answers so",
        problems,
    )
    check(
        status_of(root, by_one_click) == {"blog": "unsubscribed", "shop": "unsubscribed"},
        f"{by_one_click} left every list",
        problems,
    )
    response = page.goto(one_click_url[:-4])
    shot("6-broken-link", back=True)
    check(
        response.status == 404 and says("This unsubscribe link does not work", "write to"),
        "a cut link gets a page saying what to do",
        problems,
    )

    page.goto(blog.as_uri())
    page.get_by_label("Email address").fill(reader)
    page.get_by_label("Name (optional)").fill("Rita Reader")
    shot("7-signup-form")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    shot("8-signup-done")
    check(
        "Check your inbox" in page.inner_text("body"),
        "the signup answers 'Check your inbox'",
        problems,
    )
    deadline = time.monotonic() + 15
    while capture.to(reader) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    mail = capture.to(reader)
    check(mail is not None, "a confirmation message arrived", problems)
    if mail is not None:
        text = mail.get_body(("plain",)).get_content()
        link = next(w for w in text.split() if "/confirm/" in w)
        page.goto(link)
        shot("9-confirm")
        check(
            status_of(root, reader) == "pending",
            "opening the confirmation link leaves the address pending",
            problems,
        )
        page.get_by_role("button", name="Confirm my subscription").click()
        page.wait_for_load_state()
        shot("10-confirmed")
        check(
            "You are subscribed" in page.inner_text("body"),
            "the button answers 'You are subscribed'",
            problems,
        )
        check(status_of(root, reader) == "active", "the address is an active member", problems)
    page.goto(base + "/s/blog")
    shot("11-hosted-signup")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/pages"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    capture = Capture()
    smtp = Controller(capture, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        init_workspace(root)
        env = (root / ".env").read_text()
        env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{smtp.port}")
        env = env.replace("https://example.com/listkit", base)
        (root / ".env").write_text(env + f"LISTKIT_SITE_URL={SITE}\n")
        cli_run(root, "lists", "create", "blog", "--title", "The Field Notes")
        cli_run(root, "lists", "create", "shop", "--title", "The Shop")
        readers = ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"]
        for address in readers:
            for lst in ("blog", "shop"):
                cli_run(root, "subscribers", "add", address, "--list", lst)
        (root / "campaigns" / "pages.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
        ws = Workspace(root)
        send_campaign(ws, "pages")
        ws.close()
        links = [(a, str(capture.to(a)["List-Unsubscribe"]).strip("<>")) for a in readers]
        blog = Path(tmp) / "blog-post.html"
        blog.write_text(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>My blog</title>"
            # As every blog theme has: without it a phone draws the page 980 px wide.
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "</head><body style='font-family:serif;max-width:36rem;margin:2rem auto;"
            "padding:0 1rem'>"
            "<h1>Notes from the field</h1><p>A post, and at its end the form from "
            "<code>listkit form blog</code>:</p>" + cli_run(root, "form", "blog") + "</body></html>"
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "listkit",
                "--workspace",
                str(root),
                "serve",
                "--port",
                str(port),
                "--quiet",
            ],
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("listkit serve did not start") from None
                    time.sleep(0.1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, args=FLAGS)
                for n, width in enumerate(("desktop", "phone")):
                    context = browser.new_context(**SIZES[width])
                    drive(
                        context.new_page(),
                        width,
                        root=root,
                        base=base,
                        blog=blog,
                        links=links[2 * n : 2 * n + 2],
                        capture=capture,
                        out=args.out,
                        problems=problems,
                    )
                    context.close()
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
            smtp.stop()
    print(f"screenshots in {args.out}/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
