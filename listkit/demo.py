"""The built-in demo: a workspace in a temporary folder, run end to end.

It makes a workspace with `listkit init`, imports sample exports into three
lists, starts the local capture server, sends the example campaign to it,
reads the bounces and a spam complaint that came back (an mbox), records
readers' clicks on the tracked buy link (as `listkit serve` would), records
sample sales (a Gumroad export and a saved webhook) and prints the report;
then sends the shipped follow-up to those who did not buy (moving the
launch's finish back 3 days), runs a two-offer test on the podcast list, and
writes the HTML report with the offer test and where buyers come from.
Nothing leaves this machine.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import socket
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from listkit.cli import cli
from listkit.inbox.clicks import click_kind, record_click
from listkit.mail.message_ids import message_id
from listkit.mail.tracking import row_token
from listkit.mail.verp import verp_address
from listkit.send.sink import start_sink
from listkit.workspace import Workspace, examples_dir

DATA = Path(__file__).parent / "demo_data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sent(ws: Workspace, campaign: str | None = None) -> list[tuple[str, str, str, str]]:
    """(address, token, list, variant or '') of each sent delivery (of ``campaign``), in order."""
    secret = ws.settings.secret_key()
    return [
        (email, row_token(secret, did, legacy), slug, variant or "")
        for did, email, legacy, slug, variant in ws.db.execute(
            """SELECT d.id, s.email, d.legacy_token, l.slug, d.variant FROM deliveries d
               JOIN lists l ON l.id = d.list_id JOIN subscribers s ON s.id = d.subscriber_id
               JOIN campaigns c ON c.id = d.campaign_id
               WHERE d.state = 'sent' AND c.slug = coalesce(?, c.slug) ORDER BY d.id""",
            [campaign],
        )
    ]


def _write_sales(root: Path, ws: Workspace, sent_at: datetime) -> tuple[Path, Path]:
    """Sales that happened after the send: a Gumroad export and one saved ping."""
    rows = [r[:3] for r in _sent(ws)]
    blog = [r for r in rows if r[2] == "blog"]
    customers = [r for r in rows if r[2] == "customers"]
    template = list(csv.DictReader((DATA / "gumroad_sales_template.csv").open()))
    header = list(template[0].keys())
    out = []
    buyers = [blog[1], blog[4], customers[2], blog[7], customers[5]]
    for i, row in enumerate(template):
        row = dict(row)
        if row["Purchase ID"] != "Totals":
            at = sent_at + timedelta(hours=2 + 5 * i)
            row["Purchase Date"] = at.strftime("%Y-%m-%d")
            row["Purchase Time (UTC timezone)"] = at.strftime("%Y-%m-%d %H:%M:%S UTC")
            if row["Purchase Email"] == "BUYER":
                row["Purchase Email"] = buyers[i % len(buyers)][0]
        out.append(row)
    gumroad = root / "gumroad_sales.csv"
    with gumroad.open("w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(out)
    # A Gumroad ping saved by a webhook receiver: the buyer's link carried its token.
    email, token, _list = customers[0]
    ping = {
        "sale_id": "ping-1",
        "sale_timestamp": (sent_at + timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "email": email,
        "price": "4900",
        "currency": "usd",
        "product_name": "The Field Guide to Selling (bundle)",
        "refunded": "false",
        "test": "false",
        "url_params[lk]": token,
    }
    webhooks = root / "webhooks.jsonl"
    webhooks.write_text(json.dumps(ping) + "\n")
    return gumroad, webhooks


def _record_clicks(ws: Workspace, sent_at: datetime) -> int:
    """Readers who clicked the launch's buy link within the hour (as `listkit serve`
    records them): three of the buyers to come and three who will not buy, and one
    link scanner's fetch, which is no person's click. How many people clicked."""
    person = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
    scanner = "Mozilla/4.0 (compatible; ms-office; MSOffice 16) SafeLinks"
    rows = ws.db.execute(
        """SELECT d.id, l.slug, datetime(d.sent_unix, 'unixepoch') || '+00:00'
           FROM deliveries d JOIN lists l ON l.id = d.list_id
           JOIN campaigns c ON c.id = d.campaign_id
           WHERE c.slug = 'launch' AND d.state = 'sent' ORDER BY d.id"""
    ).fetchall()
    blog = [r for r in rows if r[1] == "blog"]
    customers = [r for r in rows if r[1] == "customers"]
    url = "https://shop.example.com/l/field-guide"
    at = (sent_at + timedelta(hours=1)).isoformat()
    people = [blog[1], blog[4], customers[2], blog[0], blog[2], customers[0]]
    with ws.db.conn:
        for delivery_id, _list, sent in people:
            kind = click_kind("GET", person, sent, at)
            record_click(ws.db, delivery_id, kind, at, url, None, person)
        delivery_id, _list, sent = blog[3]
        kind = click_kind("GET", scanner, sent, at)
        record_click(ws.db, delivery_id, kind, at, url, None, scanner)
    return len(people)


DSN = """\
From: MAILER-DAEMON@mx.fieldguide.example (Mail Delivery System)
To: {envelope}
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-Id: <{n}.demo-dsn@mx.fieldguide.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b{n}"

--b{n}
Content-Type: text/plain; charset=us-ascii

<{email}>: host mx.example.net said: 550 5.1.1 User unknown

--b{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.fieldguide.example
X-Postfix-Sender: rfc822; {envelope}

Final-Recipient: rfc822; {email}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{email}>: Recipient address rejected: User unknown

--b{n}--
"""

ARF = """\
From: <staff@fbl.example.net>
To: <{envelope}>
Subject: complaint about message from 198.51.100.7
Date: {date}
Message-ID: <{n}.demo-fbl@fbl.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="f{n}"

--f{n}
Content-Type: text/plain; charset=us-ascii

This is an email abuse report (RFC 5965).

--f{n}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: DemoFBL/1.0
Version: 1
Original-Mail-From: <{envelope}>
Original-Rcpt-To: <{email}>

--f{n}
Content-Type: message/rfc822

From: Field Guide <hello@fieldguide.example>
To: {email}
Subject: The Field Guide is out
Message-ID: <{message_id}>

--f{n}--
"""


def _write_bounces(root: Path, ws: Workspace) -> Path:
    """What the bounce mailbox holds a day later, as an mbox: two addresses that do not
    exist (delivery status reports as Postfix writes them) and one spam complaint (an
    RFC 5965 feedback report), each sent back to its message's VERP address."""
    import mailbox
    from email.utils import format_datetime

    domain = ws.settings.sender_address()[1].rpartition("@")[2]
    rows = [(e, token, message_id(token, domain), slug) for e, token, slug, _v in _sent(ws)]
    blog = [r for r in rows if r[3] == "blog"]
    customers = [r for r in rows if r[3] == "customers"]
    date = format_datetime(datetime.now(UTC))
    path = root / "bounces.mbox"
    box = mailbox.mbox(path)
    try:
        for n, (email, token, _mid, _list) in enumerate([blog[-1], blog[-2]]):
            envelope = verp_address("bounces@fieldguide.example", token)
            box.add(DSN.format(n=n, envelope=envelope, email=email, date=date).encode())
        email, token, mid, _list = customers[-1]
        envelope = verp_address("bounces@fieldguide.example", token)
        box.add(ARF.format(n=9, envelope=envelope, email=email, date=date, message_id=mid).encode())
        box.flush()
    finally:
        box.close()
    return path


def command_line(args) -> str:
    """The command as the demo shows it, quoted as a shell needs it: pasted into a
    terminal it runs the same command (``--title 'Blog readers'``, not two words)."""
    return f"$ listkit {shlex.join(args)}"


def run_demo(quiet: bool = False) -> Path:
    """Run the demo; return the workspace (its report is report.html)."""
    root = Path(tempfile.mkdtemp(prefix="listkit-demo-")) / "shop"
    runner = CliRunner()
    say = (lambda *a, **k: None) if quiet else print

    def step(*args: str, ok_codes: tuple[int, ...] = (0,)) -> None:
        say(f"\n{command_line(args)}", flush=True)
        result = runner.invoke(cli, ["--workspace", str(root), *args])
        say(result.output, end="", flush=True)
        if result.exit_code not in ok_codes:
            if result.exception and not isinstance(result.exception, SystemExit):
                raise result.exception
            raise SystemExit(result.exit_code)

    step("init", str(root))
    port = _free_port()
    _demo_settings(root, port)
    step("lists", "create", "blog", "--title", "Blog readers")
    step("lists", "create", "customers", "--title", "Customers")
    step("lists", "create", "podcast", "--title", "Podcast listeners")
    step("subscribers", "import", str(DATA / "mailchimp_blog.csv"), "--list", "blog")
    step("subscribers", "import", str(DATA / "substack_customers.csv"), "--list", "customers")
    step("subscribers", "import", str(DATA / "podcast_listeners.csv"), "--list", "podcast")
    step("lists", "ls")
    step("campaigns", "check", "launch")

    captured: list[str] = []
    controller, handler = start_sink("127.0.0.1", port, out=captured.append)
    say(f"\n(listkit sink capturing on 127.0.0.1:{port})")
    try:
        sent_at = datetime.now(UTC)
        step("send", "launch", "--yes")
    finally:
        controller.stop()
    say(f"\nThe sink captured {handler.count} messages, for example:")
    for line in captured[:3]:
        say(f"  {line}")
    step("status", "launch")

    ws = Workspace(root)
    try:
        gumroad, webhooks = _write_sales(root, ws, sent_at)
        bounces = _write_bounces(root, ws)
        clicked = _record_clicks(ws, sent_at)
    finally:
        ws.close()
    say(f"\n({clicked} readers click the launch's tracked buy link, one scanner fetches it)")
    step("bounces", "import", str(bounces))
    step("status", "launch")  # the two bounced messages stay sent, listed as bounced
    step("sales", "import", str(gumroad))
    step("sales", "import", str(webhooks))
    step("report")
    step("report", "--by", "campaign")

    # A follow-up: the shipped launch-reminder goes 3 days after launch finished,
    # to launch's recipients who have not bought (never its held-out group).
    step("campaigns", "check", "launch-reminder")
    _pretend_days_passed(root, "launch", 3)
    say("\n(the demo moves launch's finish 3 days back, as if cron ran 3 days later)")
    controller, handler = start_sink("127.0.0.1", port, out=captured.append)
    try:
        step("send", "--due")
        step("send", "--due")  # cron again: nothing more, the follow-up went once
        _variant_test(root, step, say)
        _sequences(root, step, say)
    finally:
        controller.stop()
    step("report", "--by", "variant")
    step("report", "--by", "source")
    step("campaigns", "ls")
    step("report")
    step("report", "--html", str(root / "report.html"))
    say(f"\nDemo workspace: {root}\nOpen {root / 'report.html'} in a browser.")
    return root


def _demo_settings(root: Path, port: int) -> None:
    """The demo's .env: its capture server's port, its sender and bounce address."""
    env = (root / ".env").read_text()
    env = env.replace(
        "LISTKIT_SMTP_URL=smtp://127.0.0.1:1025", f"LISTKIT_SMTP_URL=smtp://127.0.0.1:{port}"
    )
    env = env.replace(
        "LISTKIT_FROM=Your Name <you@example.com>",
        "LISTKIT_FROM=Field Guide <hello@fieldguide.example>",
    )
    env = env.replace(
        "# LISTKIT_BOUNCE_ADDRESS=bounces@example.com",
        "LISTKIT_BOUNCE_ADDRESS=bounces@fieldguide.example",
    )
    (root / ".env").write_text(env)


def _pretend_days_passed(root: Path, slug: str, days: int) -> None:
    ws = Workspace(root)
    try:
        with ws.db.conn:
            ws.db.execute(
                "UPDATE campaigns SET finished = ? WHERE slug = ?",
                [(datetime.now(UTC) - timedelta(days=days, minutes=1)).isoformat(), slug],
            )
    finally:
        ws.close()


def _sequences(root: Path, step, say) -> None:
    """The shipped sequences: a welcome for readers who join the blog list, help and
    a related offer after a purchase; cron's `send --due` sends their steps."""
    shutil.copytree(examples_dir() / "sequences", root / "sequences")
    step("sequences", "check", "welcome")
    step("sequences", "check", "after-purchase")
    say("\n(two readers join the blog list; the Field Guide's buyers so far enter on purpose)")
    step("subscribers", "add", "ines@example.com", "--list", "blog", "--name", "Ines Reader")
    step("subscribers", "add", "omar@example.com", "--list", "blog", "--name", "Omar Reader")
    # Readers who bought before the sequence existed are not enrolled by it:
    # `sequences enroll` shows how many would enter, then enrols them.
    step("sequences", "enroll", "after-purchase", "--yes")
    step("send", "--due")  # the welcome's download goes at once; the help waits a day
    ws = Workspace(root)
    try:
        with ws.db.conn:  # as if cron ran two days later
            ws.db.execute(
                "UPDATE enrollments SET next_due = next_due - ?, step_at = step_at - ?,"
                " trigger_at = trigger_at - ?",
                [2 * 86400 + 60] * 3,
            )
    finally:
        ws.close()
    say("\n(the demo moves the sequences' clocks 2 days back, as if cron ran 2 days later)")
    step("send", "--due")  # the story, and the help after the purchase
    step("sequences", "ls")
    step("sequences", "show", "welcome")


def _variant_test(root: Path, step, say) -> None:
    """Two offers to the podcast list (which earned nothing): the ebook against a bundle."""
    bundle = root / "offers" / "bundle"
    shutil.copytree(root / "offers" / "launch", bundle)
    toml = bundle / "offer.toml"
    toml.write_text(
        toml.read_text()
        .replace('product = "The Field Guide to Selling (ebook)"', 'product = "Field Guide bundle"')
        .replace('price = "29.00"', 'price = "49.00"')
        .replace("the Field Guide is out", "the Field Guide bundle is out")
    )
    (root / "campaigns" / "podcast-test.toml").write_text(
        "# An offer test: half the podcast list gets the ebook, half the bundle;\n"
        "# 10% held out. `listkit report --by variant` judges them by revenue.\n"
        'variants = ["launch", "bundle"]\nlists = ["podcast"]\nholdout = 0.1\n'
    )
    step("campaigns", "check", "podcast-test")
    step("send", "podcast-test", "--yes")
    ws = Workspace(root)
    try:
        rows = [(e, token, variant) for e, token, _list, variant in _sent(ws, "podcast-test")]
    finally:
        ws.close()
    # Some listeners buy through their links: the bundle sells a little better.
    buyers = [r for r in rows if r[2] == "bundle"][:3] + [r for r in rows if r[2] == "launch"][:2]
    say("\n(some podcast listeners buy through their links)")
    for n, (email, token, variant) in enumerate(buyers):
        amount = "49.00" if variant == "bundle" else "29.00"
        step(
            "sales",
            "add",
            "--order",
            f"pod-{n + 1}",
            "--email",
            email,
            "--amount",
            amount,
            "--currency",
            "USD",
            "--token",
            token,
        )


def main() -> int:
    run_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
