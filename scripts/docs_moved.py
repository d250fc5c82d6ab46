"""Check that moving the README into docs/ lost nothing.

    python scripts/docs_moved.py [REV]     # REV: the commit whose README was split (abf99d5)

Every heading, sentence, table cell and example line of REV's README.md must
be found, whitespace aside, in today's README.md or docs/*.md. Prints what is
missing, and counts; exit status 1 when anything is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _norm(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def pieces(markdown: str) -> list[tuple[str, str]]:
    """(kind, text) of every heading, sentence, table cell and code line."""
    found: list[tuple[str, str]] = []
    fence = False
    paragraph: list[str] = []

    def flush() -> None:
        text = " ".join(paragraph)
        paragraph.clear()
        # A sentence ends at '. ' before a capital letter or a backquote.
        for sentence in re.split(r"(?<=[.:;])\s+(?=[A-Z`(])", text):
            if _norm(sentence):
                found.append(("sentence", sentence))

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            flush()
            fence = not fence
            continue
        if fence:
            if stripped:
                found.append(("example line", stripped))
            continue
        if not stripped or stripped.startswith("<!--"):
            flush()
        elif stripped.startswith("#"):
            flush()
            found.append(("heading", stripped.lstrip("#").strip()))
        elif stripped.startswith("|"):
            flush()
            for cell in stripped.strip("|").split(" | "):
                if cell.strip() and not set(cell.strip()) <= set("-|"):
                    found.append(("table cell", cell.strip()))
        elif re.match(r"([-*]|\d+\.) ", stripped):
            flush()
            paragraph.append(re.sub(r"^([-*]|\d+\.) ", "", stripped))
        else:
            paragraph.append(stripped)
    flush()
    return found


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "abf99d5"
    old = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:README.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    now = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    corpus = _norm("\n".join(p.read_text(encoding="utf-8") for p in now))
    counts: dict[str, list[int]] = {}
    missing = []
    for kind, text in pieces(old):
        found = _norm(text) in corpus
        counts.setdefault(kind, [0, 0])[0 if found else 1] += 1
        if not found:
            missing.append(f"{kind}: {text}")
    for line in missing:
        print(f"missing {line}")
    for kind, (ok, lost) in sorted(counts.items()):
        print(f"{kind}s: {ok} found, {lost} missing")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
