"""SpamAssassin's local rules on every shipped offer and the demo's: none may score above 0.0.

Runs the demo (``listkit.demo``: a temporary workspace made by ``listkit init``
with the shipped offers, the demo's own ``bundle`` offer and subscribers
imported from sample exports), renders every offer for one of the demo's
readers as ``listkit offers preview --eml`` writes it, and the signup
confirmation message, then scores each with ``spamassassin -L -t``: local
tests only (no DNS, no network), no Bayes, no autolearn, no preferences of
the user who runs it (the empty ``~/.spamassassin`` SpamAssassin makes
anyway is removed again when it was not there before). Prints each message's
score and the rules that fired; exits 1 when any scores above ``--max``. As
root it installs Debian's ``spamassassin`` when it is missing.

    python scripts/spam_score.py [--max 0.0] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from postfix_instance import install_packages

from listkit.audience.signups import ConfirmationMail
from listkit.cli import cli
from listkit.demo import run_demo
from listkit.workspace import Workspace

# Rules SpamAssassin would run over the network, and learning, are off.
SA_OPTIONS = ["-L", "-t", "-x", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0"]


def render(root: Path, out: Path) -> list[Path]:
    """Every offer of the demo's workspace, and the confirmation message, as .eml files."""
    ws = Workspace(root)
    try:
        email, name, slug, title = ws.db.execute(
            """SELECT s.email, s.name, l.slug, l.title FROM memberships m
               JOIN subscribers s ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id
               WHERE m.status = 'active' AND s.name IS NOT NULL ORDER BY s.id LIMIT 1"""
        ).fetchone()
        signup = {"email": email, "name": name, "list": slug, "list_title": title}
        signup |= {"nonce": "spam-score", "created": datetime.now(UTC).isoformat()}
        confirm = out / "_confirm.eml"
        confirm.write_bytes(ConfirmationMail(ws.settings, ws.offers_dir).build(signup))
        offers = sorted(p.name for p in ws.offers_dir.iterdir() if (p / "offer.toml").is_file())
    finally:
        ws.close()
    files = [confirm]
    for offer in offers:
        eml = out / f"{offer}.eml"
        args = ["--workspace", str(root), "offers", "preview", offer, "--email", email]
        result = CliRunner().invoke(cli, [*args, "--eml", str(eml)])
        if result.exit_code != 0:
            raise SystemExit(f"offers preview {offer} failed:\n{result.output}")
        files.append(eml)
    return files


def score(eml: Path, home: Path) -> tuple[float, list[str]]:
    """SpamAssassin's score of ``eml`` and the rules that fired."""
    prefs = home / "user_prefs"
    prefs.touch()
    result = subprocess.run(
        ["spamassassin", *SA_OPTIONS, "-p", str(prefs)],
        input=eml.read_bytes(),
        capture_output=True,
        check=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    status = BytesHeaderParser().parsebytes(result.stdout)["X-Spam-Status"] or ""
    status = re.sub(r",\s+", ",", " ".join(status.split()))
    found = re.search(r"score=(-?[0-9.]+) .*tests=(\S*)", status)
    if not found:
        raise SystemExit(f"{eml.name}: spamassassin gave no X-Spam-Status")
    rules = [r for r in found.group(2).split(",") if r and r != "none"]
    return float(found.group(1)), rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=float, default=0.0, help="highest score allowed")
    parser.add_argument("--out", type=Path, help="keep the rendered .eml files here")
    args = parser.parse_args(argv)
    if not shutil.which("spamassassin"):
        install_packages(["spamassassin"], print)
    # SpamAssassin makes its user state folder in the home of the user, whatever $HOME says.
    state = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".spamassassin"
    state_was_there = state.exists()
    root = run_demo(quiet=True)
    try:
        with tempfile.TemporaryDirectory(prefix="listkit-spam-") as tmp:
            out = args.out or Path(tmp) / "messages"
            out.mkdir(parents=True, exist_ok=True)
            home = Path(tmp) / "home"
            home.mkdir()
            worst = []
            for eml in render(root, out):
                points, rules = score(eml, home)
                print(f"{eml.stem:20} {points:5.1f}  {' '.join(rules)}")
                if points > args.max:
                    worst.append(eml.stem)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
        if not state_was_there:
            with contextlib.suppress(OSError):  # not empty: something else uses it
                state.rmdir()
    if worst:
        print(f"above {args.max}: {', '.join(worst)}", file=sys.stderr)
        return 1
    print(f"every message scores {args.max} or less under SpamAssassin's local rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
