"""The examples of README.md and docs/*.md, read as the docs test runs them.

This module only reads Markdown; `tests/test_docs_examples.py` runs what it
finds. The rule: every fenced ```sh, ```bash, ```shell, ```console and
```toml block is an example that runs, and nothing is left out silently.
What cannot run in a test is marked in the Markdown itself, visibly:

- a whole block: an HTML comment on the line before its fence,
  ``<!-- example: not run: REASON -->``;
- one command of a shell block: ``# not run: REASON`` at the end of its
  comment (``listkit serve   # the service (not run: keeps running)`` works
  too: everything after ``not run:`` is the reason).

``<!-- example: serve -->`` before a shell block starts a real `listkit
serve` on loopback for it and points the block's ``https://HOST`` at it.

Shell lines may use the reference notation: ``[--opt VALUE]`` is an optional
part and ``a|b`` (unquoted, no spaces around the bar) alternatives. Such a
line runs once per alternative, with every optional part included, so every
option the docs mention is tried. A bar with spaces around it is a pipe.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL = {"sh", "bash", "shell", "console"}
RUN = SHELL | {"toml"}
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<what>.*?)\s*-->\s*$")
PATH_COMMENT = re.compile(r"^#\s*(?P<path>(?:campaigns|offers|sequences)/\S+\.toml)(?P<rest>.*)$")
NOT_RUN = re.compile(r"\bnot run:\s*(?P<reason>[^)]*)")
SHELL_SYNTAX = re.compile(r"[$`<>|;&(){}*?~\\]")


def docs() -> list[Path]:
    """The Markdown files whose examples run: the README and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Block:
    path: Path
    line: int  # the line of the opening fence, 1-based
    lang: str
    body: str
    not_run: str | None = None  # the reason, from an <!-- example: not run: ... --> marker
    serve: bool = False  # <!-- example: serve -->

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"

    @property
    def label(self) -> str:
        """What names the block in a test id: a TOML file's path, else its first command."""
        if self.lang == "toml":
            target = toml_target(self)
            return target[0] if target else "toml"
        found = commands(self) if self.lang in SHELL else []
        return found[0].text.splitlines()[0][:60] if found else self.lang


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with its marker if it has one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].lstrip())
        if not m:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        start, fence = i, m["fence"]
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:])
            i += 1
        i += 1
        block = Block(path, start + 1, m["lang"].lower(), "\n".join(body) + "\n")
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = MARKER.match(previous)
        if marker:
            what = marker["what"]
            if what.startswith("not run:") and what[len("not run:") :].strip():
                block.not_run = what[len("not run:") :].strip()
            elif what == "serve":
                block.serve = True
            else:
                raise ValueError(
                    f"{block.where}: unknown example marker {what!r}: "
                    "write 'not run: REASON' or 'serve'"
                )
        found.append(block)
    return found


def toml_target(block: Block) -> tuple[str, bool] | None:
    """The workspace file a TOML example shows (from its first comment), and
    whether the README says it is the shipped one."""
    m = PATH_COMMENT.match(block.body.lstrip().splitlines()[0]) if block.body.strip() else None
    if not m:
        return None
    return m["path"], "(shipped)" in m["rest"]


@dataclass
class Command:
    """One logical line of a shell example (continuations joined)."""

    line: int  # README line of its first physical line
    text: str  # as written, continuations kept, comment removed
    comment: str = ""
    output: list[str] = field(default_factory=list)  # console blocks: the expected output

    @property
    def not_run(self) -> str | None:
        m = NOT_RUN.search(self.comment)
        return m["reason"].strip() if m else None

    def forms(self) -> list[str]:
        """The command as run: one form per alternative of the reference notation."""
        if not self.text.startswith("listkit "):
            return [self.text]
        words = _words(self.text)
        opened = False
        kept: list[str] = []
        for word in words:
            bare = word
            if not _quoted(word) and word.startswith("["):
                if opened:
                    raise ValueError(f"line {self.line}: nested '[' in {self.text!r}")
                opened, bare = True, word[1:]
            closes = not _quoted(word) and bare.endswith("]")
            if closes:
                if not opened:
                    raise ValueError(f"line {self.line}: ']' without '[' in {self.text!r}")
                opened, bare = False, bare[:-1]
            if bare:
                kept.append(bare)
        if opened:
            raise ValueError(f"line {self.line}: '[' never closed in {self.text!r}")
        choices = [_alternatives(w) for w in kept]
        widest = max(len(c) for c in choices)
        forms: list[str] = []
        for k in range(widest):
            form = " ".join(c[min(k, len(c) - 1)] for c in choices)
            if form not in forms:
                forms.append(form)
        return forms


def _words(text: str) -> list[str]:
    """Split a line into shell words, keeping their quotes (the line is run as written)."""
    words, current, quote = [], "", ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote, current = ch, current + ch
        elif ch.isspace():
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
    if current:
        words.append(current)
    return words


def _quoted(word: str) -> bool:
    return "'" in word or '"' in word


def _alternatives(word: str) -> list[str]:
    if word == "|" or _quoted(word) or "|" not in word:
        return [word]
    return word.split("|")


def _split_comment(line: str) -> tuple[str, str]:
    """Code and comment of one physical line: a '#' that begins a word, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def commands(block: Block) -> list[Command]:
    """The commands of a shell block; in a console block, those after '$ ', each
    with the output printed under it."""
    found: list[Command] = []
    pending: Command | None = None
    for offset, raw in enumerate(block.body.splitlines(), start=1):
        number = block.line + offset
        if block.lang == "console" and pending is None:
            if raw.startswith("$ "):
                raw = raw[2:]
            else:
                if found:
                    found[-1].output.append(raw)
                continue
        code, comment = _split_comment(raw)
        if pending is not None:
            pending.text += "\n" + code
            pending.comment = " ".join(filter(None, [pending.comment, comment]))
        elif code.strip():
            pending = Command(number, code.strip(), comment)
        elif comment and found and raw[: len(raw) - len(raw.lstrip())]:
            # an indented comment line continues the comment of the command above
            found[-1].comment += " " + comment
            continue
        else:
            continue
        if pending.text.endswith("\\"):
            continue
        pending.text = pending.text.replace("\\\n", "")  # as the shell joins them
        found.append(pending)
        pending = None
    if pending is not None:
        raise ValueError(f"{block.where}: the last command ends with a continuation '\\'")
    return found


def in_process(form: str) -> list[str] | None:
    """The argv of a `listkit` or `cd` command that needs no shell, else None."""
    quote = ""
    for ch in form:
        if quote:
            if ch == quote:
                quote = ""
            elif quote == '"' and ch in "$`\\":
                return None
        elif ch in "'\"":
            quote = ch
        elif SHELL_SYNTAX.match(ch) or ch == "\n":
            return None
    argv = shlex.split(form)
    if argv and argv[0] in ("listkit", "cd"):
        return argv
    return None
