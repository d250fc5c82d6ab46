"""Drive the reader's pages in headless Chromium: unsubscribe, signup form, confirmation.

Sets up a workspace in a temporary folder, sends a campaign to a local
capture server, starts `listkit serve` on loopback, then, in Debian's
chromium (driven by playwright's Python package; no browser is downloaded):

- opens the unsubscribe link of a received message, clicks "Unsubscribe from
  <list>", checks the answer and that the membership is unsubscribed;
- opens a blog page with the snippet `listkit form` prints, fills it in,
  submits, checks the answer; opens the confirmation link from the mail that
  arrives, checks the address is still pending, clicks the button, checks it
  is active.

Saves a screenshot of each page and exits 1 on any mismatch.

    .venv/bin/python scripts/browser_pages.py [--out bench/out/pages]
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from click.testing import CliRunner

from listkit.cli import cli
from listkit.sender import send_campaign
from listkit.workspace import Workspace, init_workspace

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("chromium is missing: install the Debian package chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium")


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


def status_of(root: Path, email: str) -> str:
    ws = Workspace(root)
    try:
        row = ws.db.execute(
            """SELECT m.status FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
               WHERE s.key = ?""",
            [email],
        ).fetchone()
        return row[0] if row else "-"
    finally:
        ws.close()


def check(ok: bool, what: str, problems: list[str]) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        problems.append(what)


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
        (root / ".env").write_text(env)
        cli_run(root, "lists", "create", "blog", "--title", "The Field Notes")
        cli_run(root, "subscribers", "add", "ann@example.com", "--list", "blog", "--name", "Ann")
        (root / "campaigns" / "pages.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
        ws = Workspace(root)
        send_campaign(ws, "pages")
        ws.close()
        unsubscribe_url = str(capture.to("ann@example.com")["List-Unsubscribe"]).strip("<>")
        blog = Path(tmp) / "blog-post.html"
        blog.write_text(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>My blog</title>"
            "</head><body style='font-family:serif;max-width:36rem;margin:2rem auto'>"
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
                page = browser.new_page(viewport={"width": 800, "height": 600})

                page.goto(unsubscribe_url)
                page.screenshot(path=str(args.out / "1-unsubscribe.png"), full_page=True)
                check(
                    page.get_by_role("heading").inner_text() == "Unsubscribe from The Field Notes?",
                    "the unsubscribe page names the list",
                    problems,
                )
                check(
                    status_of(root, "ann@example.com") == "active",
                    "opening it changed nothing",
                    problems,
                )
                page.get_by_role("button", name="Unsubscribe from The Field Notes").click()
                page.wait_for_load_state()
                page.screenshot(path=str(args.out / "2-unsubscribed.png"), full_page=True)
                check(
                    "You are unsubscribed" in page.inner_text("body"),
                    "the button answers 'You are unsubscribed'",
                    problems,
                )
                check(
                    status_of(root, "ann@example.com") == "unsubscribed",
                    "ann is unsubscribed from blog",
                    problems,
                )

                page.goto(blog.as_uri())
                page.get_by_label("Email address").fill("reader@example.com")
                page.get_by_label("Name (optional)").fill("Rita Reader")
                page.screenshot(path=str(args.out / "3-signup-form.png"), full_page=True)
                page.get_by_role("button", name="Subscribe").click()
                page.wait_for_load_state()
                page.screenshot(path=str(args.out / "4-signup-done.png"), full_page=True)
                check(
                    "Check your inbox" in page.inner_text("body"),
                    "the signup answers 'Check your inbox'",
                    problems,
                )
                deadline = time.monotonic() + 15
                while capture.to("reader@example.com") is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                mail = capture.to("reader@example.com")
                check(mail is not None, "a confirmation message arrived", problems)
                if mail is not None:
                    text = mail.get_body(("plain",)).get_content()
                    link = next(w for w in text.split() if "/confirm/" in w)
                    page.goto(link)
                    page.screenshot(path=str(args.out / "5-confirm.png"), full_page=True)
                    check(
                        status_of(root, "reader@example.com") == "pending",
                        "opening the confirmation link leaves the address pending",
                        problems,
                    )
                    page.get_by_role("button", name="Confirm my subscription").click()
                    page.wait_for_load_state()
                    page.screenshot(path=str(args.out / "6-confirmed.png"), full_page=True)
                    check(
                        "You are subscribed" in page.inner_text("body"),
                        "the button answers 'You are subscribed'",
                        problems,
                    )
                    check(
                        status_of(root, "reader@example.com") == "active",
                        "the address is an active member",
                        problems,
                    )
                page.goto(base + "/s/blog")
                page.screenshot(path=str(args.out / "7-hosted-signup.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
            smtp.stop()
    print(f"screenshots in {args.out}/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
