"""Make tests/fixtures/previous-release.db: a small database written by an earlier
listkit, with that release's own code.

    .venv/bin/python scripts/previous_release_db.py [COMMIT] [--out PATH]

COMMIT (default 865e307, the release before the schema steps added after it)
is exported with `git archive` into a temporary folder and run from there
(``python -m listkit`` with that folder first on PYTHONPATH; the libraries are
this virtualenv's). It makes a workspace with two lists, subscribers (names,
custom fields, one suppressed), sends the example campaign to an aiosmtpd
server in this process, records a click and a one-click unsubscribe through
that release's `listkit serve`, imports sales (by token, by email, and one
that no campaign earned), and copies the database, checkpointed, to PATH.

tests/test_previous_release.py opens the result with today's code. For the
next release: run this script with the commit being released and commit the
new fixture beside the old one (or in its place), as tests/fixtures/README.md
says.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from io import BytesIO
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = "https://lists.example.com"
HOOK_SECRET = "previous-release-hook-secret-0123"
READERS = [
    ("ann@example.com", "Ann", "blog"),
    ("bob@example.com", "Bob", "blog"),
    ("cat@example.com", "Cat", "blog"),
    ("dan@example.com", "", "blog"),
    ("eve@example.com", "Eve", "customers"),
    ("fay@example.com", "Fay", "customers"),
    ("gus@example.com", "Gus", "customers"),
    ("Ünï@Bücher.example", "Uni", "customers"),
]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, envelope.content))
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export(commit: str, into: Path) -> None:
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "listkit", "offers", "campaigns"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


class Old:
    """That release's `listkit`, run in ``workspace``."""

    def __init__(self, code: Path, workspace: Path):
        self.workspace = workspace
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LISTKIT_")}
        self.env["PYTHONPATH"] = str(code)
        # From the export's folder: `python -m` puts the working folder first on
        # sys.path, which must not be this checkout (today's listkit).
        self.cwd = code
        self.command = [sys.executable, "-m", "listkit", "--workspace", str(workspace)]

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*self.command, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0,):
            raise SystemExit(f"listkit {' '.join(args)} exited {done.returncode}:\n{done.stdout}"
                             f"{done.stderr}")  # fmt: skip
        return done.stdout

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.command, *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )


def request(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    req.add_header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def make(commit: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        code = tmp_path / "code"
        export(commit, code)
        ws = tmp_path / "ws"
        old = Old(code, ws)
        old("init", str(ws))
        recorder = Recorder()
        smtp = Controller(recorder, hostname="127.0.0.1", port=free_port())
        smtp.start()
        try:
            env = (ws / ".env").read_text()
            env = env.replace("smtp://127.0.0.1:1025", f"smtp://127.0.0.1:{smtp.port}")
            env = env.replace("https://example.com/listkit", PUBLIC)
            (ws / ".env").write_text(env + f"LISTKIT_WEBHOOK_SECRET={HOOK_SECRET}\n")
            old("lists", "create", "blog", "--title", "Blog readers")
            old("lists", "create", "customers", "--title", "Customers")
            for slug in ("blog", "customers"):
                rows = [r for r in READERS if r[2] == slug]
                csv = tmp_path / f"{slug}.csv"
                csv.write_text(
                    "email,name,city\n" + "".join(f"{e},{n},Lyon\n" for e, n, _ in rows),
                    encoding="utf-8",
                )
                old("subscribers", "import", str(csv), "--list", slug)
            old("suppress", "add", "gus@example.com")
            # The example campaign, without its random holdout (a fixed audience).
            campaign = (ws / "campaigns" / "launch.toml").read_text()
            (ws / "campaigns" / "launch.toml").write_text(
                campaign.replace("holdout = 0.1", "holdout = 0")
            )
            old("send", "launch", "--yes")
            sent_at = time.monotonic()
        finally:
            smtp.stop()
        sent = {
            rcpt: message_from_bytes(data, policy=default).get_body(("plain",)).get_content()
            for rcpt, data in recorder.messages
        }
        conn = sqlite3.connect(ws / "listkit.db")
        tokens = dict(conn.execute("SELECT email, token FROM deliveries"))
        conn.close()

        # A click and a one-click unsubscribe through that release's service.
        port = free_port()
        serve = old.popen("serve", "--port", str(port), "--quiet")
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if request(base + "/healthz") == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            # A scanner's click at once (click_bot), a person's after BOT_SECONDS (click).
            for who in ("dan@example.com", "ann@example.com"):
                if who == "ann@example.com":
                    time.sleep(max(0.0, sent_at + 11 - time.monotonic()))
                click = re.search(re.escape(PUBLIC) + r"(/c/[^\s\"<>]+)", sent[who])
                assert request(base + click.group(1)) == 302, "the click was not recorded"
            unsub = re.search(re.escape(PUBLIC) + r"(/u/[^\s\"<>]+)", sent["bob@example.com"])
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            answer = request(base + unsub.group(1), b"List-Unsubscribe=One-Click", form)
            assert answer == 200, f"the unsubscribe answered {answer}"
        finally:
            serve.terminate()
            serve.wait(10)

        sales = tmp_path / "sales.csv"
        today = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sales.write_text(
            "order,email,amount,currency,date,token\n"
            f"o-1,someone@else.example,20.30,EUR,{today},{tokens['ann@example.com']}\n"
            f"o-2,cat@example.com,20.30,EUR,{today},\n"
            "o-3,stranger@example.org,15.00,USD,2026-11-01T09:00:00Z,\n"
        )
        old("sales", "import", str(sales), "--format", "csv")
        old("report", "--by", "list")  # the reports of that release read it
        # What that release's report says, beside the database (when it has --json):
        # today's code must say the same of it once migrated.
        reports = {by: old("report", "--by", by, "--json") for by in ("list", "campaign", "offer")}

        # One file: the last connection closed, the WAL is in the database.
        for leftover in ("listkit.db-wal", "listkit.db-shm"):
            if (ws / leftover).exists():
                raise SystemExit(f"{leftover} left beside the database: a process still has it")
        shutil.copyfile(ws / "listkit.db", out)
        os.chmod(out, 0o600)
        report = out.with_suffix(".report.json")
        report.write_text(
            "{\n" + ",\n".join(f'"{by}": {text.strip()}' for by, text in reports.items()) + "\n}\n"
        )
    print(f"Wrote {out} ({out.stat().st_size:,} bytes) and {report.name} with listkit at {commit}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", nargs="?", default="865e307")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "tests" / "fixtures" / "previous-release.db"
    )
    args = parser.parse_args()
    make(args.commit, args.out)


if __name__ == "__main__":
    main()
