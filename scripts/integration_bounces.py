"""Bounce intake against real servers on loopback: Postfix makes the bounces, Dovecot serves them.

    make integration-bounces        (as root: installs postfix and dovecot-imapd if missing)

What it does, in a temporary folder it removes afterwards:

1. Postfix from a configuration directory of its own (``postfix -c DIR``), on
   127.0.0.1 at a free high port: it accepts mail for users.example.com (three
   known users, anything else accepted and then bounced by Postfix itself as
   "unknown user", status 5.1.1, its real DSN) and delivers
   bounces+<token>@shop.example.com to one Maildir (``recipient_delimiter = +``).
2. Dovecot from a configuration file of its own (``dovecot -c FILE``), IMAP on
   127.0.0.1 (implicit TLS and STARTTLS, a trustme certificate), serving that
   Maildir.
3. A listkit workspace sends a campaign to three known and three unknown
   users with ``LISTKIT_BOUNCE_ADDRESS``. The bounce mailbox also receives a
   person's reply, a person's "Vacation plans" message, a forged delivery
   report naming reader1 (sent to the plain bounce address: no token, no
   listkit Message-ID), an Office 365 NDR for reader2 (Sisimai's
   lhost-office365-01 with reader2's VERP address, "550 5.1.10
   RecipientNotFound") and a Gmail delay warning for reader3 (Sisimai's
   lhost-gmail-08, "THIS IS A WARNING MESSAGE ONLY").
4. ``listkit bounces fetch`` is killed (SIGKILL) right after its commit, then
   run again: exactly the unknown users and reader2 are suppressed, each
   bounce is recorded once, the bounces leave the mailbox, and the people's
   messages, the forged report and the warning (known by its words alone)
   stay, unread.
5. Over STARTTLS with ``LISTKIT_IMAP_DONE=move:Processed``, one more bounce
   is moved to a folder that fetch creates.

The system's own Postfix and Dovecot configuration is never touched and no
system instance is started. The Debian installation, the Postfix instance,
free ports and the time limit (180 s; the run still cleans up) come from
``scripts/postfix_instance.py``, shared with ``scripts/integration_dkim.py``.
Exit status 0 when every check holds.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from postfix_instance import (
    LISTKIT,
    ROOT,
    Postfix,
    free_port,
    install_packages,
    listkit,
    port_open,
    postfix_missing,
    temporary_folder,
    time_limit,
    wait_until,
)

from listkit.mail.tracking import row_token
from listkit.workspace import Workspace

# `listkit bounces fetch`, paused after its commit and before it touches a message.
PAUSED_FETCH = """
import sys
import time
from pathlib import Path

from listkit.inbox.bounces import fetch
from listkit.workspace import Workspace


def pause():
    print("committed; pausing before removing messages", file=sys.stderr, flush=True)
    time.sleep(120)


fetch(Workspace(Path(sys.argv[1])), after_commit=pause)
"""

KNOWN = ["reader1", "reader2", "reader3"]
UNKNOWN = ["ghost1", "ghost2", "ghost3"]
USERS = "users.example.com"
SHOP = "shop.example.com"
IMAP_PASSWORD = "s3cret/with@odd%chars"  # no ":" (the passwd-file separator)


def say(text: str) -> None:
    print(f"integration-bounces: {text}", flush=True)


def fail(text: str) -> None:
    raise SystemExit(f"integration-bounces: FAILED: {text}")


def install() -> None:
    """postfix and dovecot-imapd from Debian packages, without starting system instances."""
    missing = postfix_missing()
    if not Path("/usr/sbin/dovecot").exists() or not Path("/usr/lib/dovecot/imap").exists():
        missing.append("dovecot-imapd")
    install_packages(missing, say)


def certificates(work: Path) -> Path:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    cert.private_key_pem.write_to_path(str(work / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(work / "server.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(work / "server.pem"), append=True)
    (work / "server.key").chmod(0o600)
    return work / "ca.pem"


# Mail for users.example.com: three known users; anything else is accepted, then
# bounced by Postfix itself ("unknown user", 5.1.1, its own DSN) to the bounce
# address, whose +tags (VERP) land in one Maildir.
SETTINGS = """\
relay_domains =
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_reject_unlisted_recipient = no
virtual_mailbox_domains = {shop}, {users}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_mailbox_base = {mail}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
recipient_delimiter = +
smtputf8_enable = no
biff = no
notify_classes =
"""


def postfix_for_bounces(work: Path, port: int, uid: int, gid: int) -> Postfix:
    folder = work / "postfix"
    mail = work / "mail"
    for d in (mail, mail / SHOP, mail / USERS):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, gid)
    settings = SETTINGS.format(
        shop=SHOP, users=USERS, conf=folder / "etc", mail=mail, uid=uid, gid=gid
    )
    postfix = Postfix(folder, port, f"mail.{SHOP}", settings)
    (postfix.conf / "vmailbox").write_text(
        f"bounces@{SHOP} {SHOP}/bounces/\n" + "".join(f"{u}@{USERS} {USERS}/{u}/\n" for u in KNOWN)
    )
    return postfix


def start_dovecot(work: Path, imaps: int, imap: int, uid: int, gid: int) -> Path:
    conf = work / "dovecot.conf"
    (work / "dovecot-run").mkdir()
    (work / "dovecot-state").mkdir()
    (work / "passwd").write_text(f"bounces@{SHOP}:{{PLAIN}}{IMAP_PASSWORD}\n")
    conf.write_text(
        f"""\
base_dir = {work}/dovecot-run
state_dir = {work}/dovecot-state
log_path = {work}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{work}/server.pem
ssl_key = <{work}/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:~
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={work}/mail/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
"""
    )
    subprocess.run(["dovecot", "-c", str(conf)], check=True)
    return conf


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    if not wait_until(check, timeout):
        fail(f"timed out waiting for {what}")


def maildir_messages(box: Path) -> list[Path]:
    return sorted(
        p for sub in ("new", "cur") if (box / sub).is_dir() for p in (box / sub).iterdir()
    )


def main() -> int:
    time_limit("integration-bounces")
    install()
    nobody = pwd.getpwnam("nobody").pw_uid
    nogroup = grp.getgrnam("nogroup").gr_gid
    smtp_port, imaps_port, imap_port = free_port(), free_port(), free_port()
    # The folder is mode 0755: the mail user walks into it.
    with temporary_folder("listkit-bounces-", bool(os.environ.get("KEEP")), say) as work:
        ca = certificates(work)
        with postfix_for_bounces(work, smtp_port, nobody, nogroup):
            dovecot_conf = None
            try:
                dovecot_conf = start_dovecot(work, imaps_port, imap_port, nobody, nogroup)
                wait_for(
                    "Dovecot to listen",
                    lambda: all(map(port_open, (imaps_port, imap_port))),
                )
                say(
                    f"Postfix on 127.0.0.1:{smtp_port}, "
                    f"Dovecot IMAPS {imaps_port} / IMAP {imap_port}"
                )
                return checks(work, ca, smtp_port, imaps_port, imap_port)
            finally:
                if dovecot_conf is not None:
                    subprocess.run(
                        ["doveadm", "-c", str(dovecot_conf), "stop"], capture_output=True
                    )
                    pid = work / "dovecot-run" / "master.pid"
                    if pid.exists():
                        with contextlib.suppress(ValueError, ProcessLookupError):
                            os.kill(int(pid.read_text()), signal.SIGTERM)
                    time.sleep(0.5)


SISIMAI = ROOT / "tests" / "fixtures" / "bounces" / "sisimai"


def subject_of(path: Path) -> str:
    return subject_of_bytes(path.read_bytes())


def send_others(ws: Path, smtp_port: int) -> list[str]:
    """Mail the bounce mailbox what is not a bounce of listkit's, and one real bounce
    Postfix cannot make (Office 365's). The subjects of those that must stay."""
    workspace = Workspace(ws)
    try:
        secret = workspace.settings.secret_key()
        tokens = {
            email: row_token(secret, did, legacy)
            for did, email, legacy in workspace.db.execute(
                """SELECT d.id, s.email, d.legacy_token FROM deliveries d
                   JOIN subscribers s ON s.id = d.subscriber_id"""
            )
        }
    finally:
        workspace.close()
    plain = f"bounces@{SHOP}"

    def verp(user: str) -> str:
        return f"bounces+{tokens[f'{user}@{USERS}']}@{SHOP}"

    vacation = EmailMessage()
    vacation["From"] = f"reader3@{USERS}"
    vacation["To"] = plain
    vacation["Subject"] = "Vacation plans"
    vacation["Message-ID"] = f"<vacation-plans@{USERS}>"
    vacation.set_content("We are off to the coast next week. Does the offer still hold?\n")
    # Anyone can write a delivery report: this one names reader1, without a token.
    forged = (ROOT / "tests" / "fixtures" / "bounces" / "postfix_user_unknown.eml").read_bytes()
    forged = (
        forged.replace(b"bounces+postfixtokenaaaa@example.com", plain.encode())
        .replace(b"nobody@example.net", f"reader1@{USERS}".encode())
        .replace(b"postfixtokenaaaa.lk@", b"forged.1@")
        .replace(b"Subject: Undelivered Mail Returned to Sender", b"Subject: Forged report")
    )
    o365 = (SISIMAI / "lhost-office365-01.eml").read_bytes()
    o365 = o365.replace(b"kijitora@example.com", f"reader2@{USERS}".encode()).replace(
        b"To: <sironeko@example.ed.jp>", f"To: <{verp('reader2')}>".encode()
    )
    warning = (SISIMAI / "lhost-gmail-08.eml").read_bytes()
    warning = warning.replace(b"kijitora@example.com", f"reader3@{USERS}".encode())
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.send_message(vacation, from_addr=f"reader3@{USERS}", to_addrs=[plain])
        s.sendmail("", [plain], forged)
        s.sendmail("", [verp("reader2")], o365)
        s.sendmail("", [verp("reader3")], warning)
    return ["Vacation plans", "Forged report", subject_of_bytes(warning)]


def subject_of_bytes(data: bytes) -> str:
    return str(message_from_bytes(data)["Subject"]).strip()


def checks(work: Path, ca: Path, smtp_port: int, imaps_port: int, imap_port: int) -> int:
    """The campaign, the bounces and the three fetches; 0 when every check holds."""
    ws = work / "ws"
    result = subprocess.run([*LISTKIT, "init", str(ws)], capture_output=True, text=True)
    if result.returncode:
        fail(f"listkit init: {result.stdout}{result.stderr}")
    quoted_user = f"bounces%40{SHOP}"
    quoted_password = quote(IMAP_PASSWORD, safe="")
    env_file = ws / ".env"
    env_file.write_text(
        env_file.read_text()
        + f"\nLISTKIT_SMTP_URL=smtp://127.0.0.1:{smtp_port}\n"
        + f"LISTKIT_FROM=Field Guide Shop <shop@{SHOP}>\n"
        + f"LISTKIT_BOUNCE_ADDRESS=bounces@{SHOP}\n"
        + f"LISTKIT_IMAP_URL=imaps://{quoted_user}:{quoted_password}@127.0.0.1:{imaps_port}/INBOX\n"
        + f"LISTKIT_IMAP_CA={ca}\n"
    )
    (ws / "campaigns" / "it.toml").write_text('offer = "launch"\nlists = ["blog"]\n')
    steps = [["lists", "create", "blog"]]
    steps += [["subscribers", "add", f"{u}@{USERS}", "--list", "blog"] for u in KNOWN + UNKNOWN]
    for step in steps:
        r = listkit(ws, *step)
        if r.returncode:
            fail(f"listkit {' '.join(step)}: {r.stdout}{r.stderr}")
    r = listkit(ws, "send", "it", "--yes")
    if r.returncode:
        fail(f"listkit send: {r.stdout}{r.stderr}")
    say("campaign sent: " + r.stdout.strip().splitlines()[-1])

    # A person's reply to the bounce address: not a bounce, must stay.
    reply = EmailMessage()
    reply["From"] = f"reader1@{USERS}"
    reply["To"] = f"bounces@{SHOP}"
    reply["Subject"] = "Re: the Field Guide"
    reply["Message-ID"] = f"<reply-1@{USERS}>"
    reply.set_content("Does the discount work for the paperback too?\n")
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.send_message(reply, from_addr=f"reader1@{USERS}", to_addrs=[f"bounces@{SHOP}"])

    stay = send_others(ws, smtp_port)

    box = work / "mail" / SHOP / "bounces"
    arriving = len(UNKNOWN) + 1 + len(stay) + 1  # the reply; the Office 365 NDR, a real bounce
    wait_for(
        "Postfix's bounces and the other messages in the Maildir",
        lambda: len(maildir_messages(box)) >= arriving,
    )
    time.sleep(1)  # anything more would be a defect: counted below
    messages = maildir_messages(box)
    if len(messages) != arriving:
        fail(f"expected {arriving} messages in the bounce mailbox, found {len(messages)}")
    sample = next(
        p.read_text(errors="replace")
        for p in messages
        if "Undelivered" in p.read_text(errors="replace")
    )
    if "X-Postfix-Queue-ID" not in sample or "Status: 5.1.1" not in sample:
        fail("the bounce is not Postfix's own DSN")
    say(f"{len(messages)} messages in the bounce mailbox (Postfix DSNs and one reply)")

    # Kill fetch right after its commit, before it touches the mailbox.
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_FETCH, str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    line = proc.stderr.readline()
    if "committed" not in line:
        proc.kill()
        fail(f"fetch did not reach its commit: {line}{proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    say("bounces fetch killed (SIGKILL) after its commit")
    if len(maildir_messages(box)) != arriving:
        fail("messages were removed before the kill")

    def suppressed() -> list[str]:
        with sqlite3.connect(ws / "listkit.db") as db:
            return [r[0] for r in db.execute("SELECT key FROM suppressions ORDER BY key")]

    def events() -> int:
        with sqlite3.connect(ws / "listkit.db") as db:
            return db.execute("SELECT COUNT(*) FROM events WHERE kind = 'bounce'").fetchone()[0]

    expected = sorted([*(f"{u}@{USERS}" for u in UNKNOWN), f"reader2@{USERS}"])
    if suppressed() != expected:
        fail(f"after the killed run, suppressed {suppressed()}, expected {expected}")

    r = listkit(ws, "bounces", "fetch")
    if r.returncode:
        fail(f"bounces fetch: {r.stdout}{r.stderr}")
    say("fetch again: " + r.stdout.strip().splitlines()[-1])
    if IMAP_PASSWORD in r.stdout + r.stderr or "s3cret" in r.stdout + r.stderr:
        fail("the IMAP password appeared in the output")
    if suppressed() != expected or events() != len(expected):
        fail(f"after the rerun: suppressed {suppressed()}, {events()} bounce events")
    left = maildir_messages(box)
    subjects = sorted(subject_of(p) for p in left)
    if subjects != sorted(["Re: the Field Guide", *stay]):
        fail(f"the mailbox should hold the reply and {stay}, holds {subjects}")
    for p in left:
        if ":2," in p.name and "S" in p.name.split(":2,")[1]:
            fail(f"{subject_of(p)!r} was marked read")
    say(f"left in the mailbox, unread: {subjects}")

    # STARTTLS on the plain port, a third run: nothing new, nothing removed.
    env_file.write_text(
        env_file.read_text().replace(
            f"imaps://{quoted_user}:{quoted_password}@127.0.0.1:{imaps_port}",
            f"imap+starttls://{quoted_user}:{quoted_password}@127.0.0.1:{imap_port}",
        )
    )
    r = listkit(ws, "bounces", "fetch", "--json")
    if r.returncode or '"messages": []' not in r.stdout:
        fail(f"third fetch (STARTTLS) read something again: {r.stdout}{r.stderr}")
    if len(maildir_messages(box)) != len(left) or events() != len(expected):
        fail("the third fetch changed something")

    # LISTKIT_IMAP_DONE=move:Processed: a new bounce goes to that folder (created).
    for step in (
        ["lists", "create", "more"],
        ["subscribers", "add", f"ghost4@{USERS}", "--list", "more"],
    ):
        listkit(ws, *step)
    (ws / "campaigns" / "it2.toml").write_text('offer = "launch"\nlists = ["more"]\n')
    if listkit(ws, "send", "it2", "--yes").returncode:
        fail("listkit send it2 failed")
    wait_for("the next bounce", lambda: len(maildir_messages(box)) == len(left) + 1)
    env_file.write_text(env_file.read_text() + "LISTKIT_IMAP_DONE=move:Processed\n")
    r = listkit(ws, "bounces", "fetch")
    say("fetch, moving: " + r.stdout.strip().splitlines()[-1])
    processed = maildir_messages(box / ".Processed")
    if r.returncode or len(processed) != 1 or len(maildir_messages(box)) != len(left):
        fail(f"move:Processed: {r.stdout}{r.stderr}; {len(processed)} in Processed")
    expected = sorted([*expected, f"ghost4@{USERS}"])
    if suppressed() != expected or events() != len(expected):
        fail(f"after the move: suppressed {suppressed()}, {events()} bounce events")
    r = listkit(ws, "report", "--by", "campaign")
    say("report:\n" + r.stdout)
    say(f"OK: suppressed exactly {', '.join(expected)}; {len(left)} messages stay in the mailbox")
    return 0


if __name__ == "__main__":
    sys.exit(main())
