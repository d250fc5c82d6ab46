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
   users with ``LISTKIT_BOUNCE_ADDRESS``; a person's reply also lands in the
   bounce mailbox.
4. ``listkit bounces fetch`` is killed (SIGKILL) right after its commit, then
   run again: exactly the unknown users are suppressed, each bounce is
   recorded once, the bounces leave the mailbox and the reply stays, unread.
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

    box = work / "mail" / SHOP / "bounces"
    wait_for(
        "Postfix's bounces and the reply in the Maildir",
        lambda: len(maildir_messages(box)) >= len(UNKNOWN) + 1,
    )
    time.sleep(1)  # anything more would be a defect: counted below
    messages = maildir_messages(box)
    if len(messages) != len(UNKNOWN) + 1:
        fail(f"expected {len(UNKNOWN) + 1} messages in the bounce mailbox, found {len(messages)}")
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
        [*LISTKIT, "--workspace", str(ws), "bounces", "fetch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "LISTKIT_TEST_PAUSE_AFTER_COMMIT": "120"},
    )
    line = proc.stderr.readline()
    if "committed" not in line:
        proc.kill()
        fail(f"fetch did not reach its commit: {line}{proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    say("bounces fetch killed (SIGKILL) after its commit")
    if len(maildir_messages(box)) != len(UNKNOWN) + 1:
        fail("messages were removed before the kill")

    def suppressed() -> list[str]:
        with sqlite3.connect(ws / "listkit.db") as db:
            return [r[0] for r in db.execute("SELECT key FROM suppressions ORDER BY key")]

    def events() -> int:
        with sqlite3.connect(ws / "listkit.db") as db:
            return db.execute("SELECT COUNT(*) FROM events WHERE kind = 'bounce'").fetchone()[0]

    expected = sorted(f"{u}@{USERS}" for u in UNKNOWN)
    if suppressed() != expected:
        fail(f"after the killed run, suppressed {suppressed()}, expected {expected}")

    r = listkit(ws, "bounces", "fetch")
    if r.returncode:
        fail(f"bounces fetch: {r.stdout}{r.stderr}")
    say("fetch again: " + r.stdout.strip().splitlines()[-1])
    if IMAP_PASSWORD in r.stdout + r.stderr or "s3cret" in r.stdout + r.stderr:
        fail("the IMAP password appeared in the output")
    if suppressed() != expected or events() != len(UNKNOWN):
        fail(f"after the rerun: suppressed {suppressed()}, {events()} bounce events")
    left = maildir_messages(box)
    if len(left) != 1 or "Re: the Field Guide" not in left[0].read_text():
        fail(f"the mailbox should hold only the reply, holds {[p.name for p in left]}")
    if ":2," in left[0].name and "S" in left[0].name.split(":2,")[1]:
        fail("the reply was marked read")

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
    if len(maildir_messages(box)) != 1 or events() != len(UNKNOWN):
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
    wait_for("the fourth bounce", lambda: len(maildir_messages(box)) == 2)
    env_file.write_text(env_file.read_text() + "LISTKIT_IMAP_DONE=move:Processed\n")
    r = listkit(ws, "bounces", "fetch")
    say("fetch, moving: " + r.stdout.strip().splitlines()[-1])
    processed = maildir_messages(box / ".Processed")
    if r.returncode or len(processed) != 1 or len(maildir_messages(box)) != 1:
        fail(f"move:Processed: {r.stdout}{r.stderr}; {len(processed)} in Processed")
    expected = sorted([*expected, f"ghost4@{USERS}"])
    if suppressed() != expected or events() != len(expected):
        fail(f"after the move: suppressed {suppressed()}, {events()} bounce events")
    r = listkit(ws, "report", "--by", "campaign")
    say("report:\n" + r.stdout)
    say(f"OK: suppressed exactly {', '.join(expected)}; the reply stays in the mailbox")
    return 0


if __name__ == "__main__":
    sys.exit(main())
