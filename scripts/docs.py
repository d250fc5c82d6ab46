"""Write the generated parts of the docs: the settings table, the CLI reference
and the modules' rules.

    python scripts/docs.py           # rewrite them (`make docs`)
    python scripts/docs.py --check   # exit 1, naming each stale part

The rule: what the code already says is never kept by hand. The settings
table comes from the declarations in ``listkit/config.py``, the CLI reference
from the commands' own help, the module table and the rules from the
modules' docstrings; a
generated part lies between ``<!-- generated: NAME ... -->`` and
``<!-- end generated: NAME -->`` and is only ever written by this script.
``make test`` fails while one is stale (``tests/test_docs.py``).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listkit.cli import CONTEXT_SETTINGS, cli  # noqa: E402
from listkit.config import Settings  # noqa: E402

COMMAND = "make docs"
# The help as a terminal as wide as listkit's widest help shows it, whatever terminal runs this.
HELP = {**CONTEXT_SETTINGS, "terminal_width": CONTEXT_SETTINGS["max_content_width"]}


def settings_table() -> str:
    """Every setting, as declared: name, type, meaning, default."""
    rows = [
        "| setting | type | meaning | default |",
        "|---|---|---|---|",
    ]
    for setting in Settings.declared.values():
        kind = setting.kind.label + (", secret: never shown" if setting.secret else "")
        if setting.default_doc:
            default = setting.default_doc
        elif setting.default is not None:
            default = f"`{setting.default}`"
        else:
            default = "none"
        rows.append(f"| `{setting.name}` | {kind} | {setting.doc} | {default} |")
    return "\n".join(rows)


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Context]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx, **HELP)
        found.append((sub.command_path, sub))
        if isinstance(command, click.Group):
            found += _commands(command, sub)
    return found


def cli_reference() -> str:
    """Each command's --help, as `listkit COMMAND --help` prints it."""
    root = click.Context(cli, info_name="listkit", **HELP)
    pages = [("listkit", root), *_commands(cli, root)]
    out = ["Commands:", ""]
    out += [f"- [`{path}`](#{anchor(path)})" for path, _ctx in pages]
    for path, ctx in pages:
        out += ["", f"## {path}", "", "```text", ctx.command.get_help(ctx).rstrip(), "```"]
    return "\n".join(out)


RULE = re.compile(r"\bThe rules?\b")


def module_rules() -> str:
    """The "The rule:" paragraphs of the modules' docstrings, module by module."""
    out: list[str] = []
    for path in sorted((ROOT / "listkit").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        paragraphs = docstring.split("\n\n")
        found: list[str] = []
        for i, paragraph in enumerate(paragraphs):
            m = RULE.search(paragraph)
            if not m:
                continue
            text = paragraph[m.start() :]
            if text.rstrip().endswith(":") and i + 1 < len(paragraphs):
                text += "\n\n" + paragraphs[i + 1]  # the list the rule announces
            found.append(text.replace("``", "`"))
        if found:
            out += [f"### `{path.relative_to(ROOT)}`", ""]
            for text in found:
                out += [text, ""]
    return "\n".join(out).rstrip()


def module_table() -> str:
    """Every module of the package, with the first line of its docstring."""
    rows = ["| module | what it owns |", "|---|---|"]
    for path in sorted((ROOT / "listkit").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = " ".join(docstring.split("\n\n")[0].split()).replace("``", "`")
        first = first.replace("|", "\\|")  # a bar would end the cell
        rows.append(f"| `{path.relative_to(ROOT)}` | {first} |")
    return "\n".join(rows)


# (file, part name, what writes it)
PARTS: list[tuple[str, str, Callable[[], str]]] = [
    ("docs/workspace.md", "settings", settings_table),
    ("docs/cli.md", "cli", cli_reference),
    ("docs/development.md", "modules", module_table),
    ("docs/development.md", "rules", module_rules),
]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _span(text: str, name: str) -> tuple[int, int]:
    start = re.search(rf"<!-- generated: {name}\b[^\n]*-->\n", text)
    end = text.find(f"<!-- end generated: {name} -->")
    if not start or end < start.end():
        raise SystemExit(f"no <!-- generated: {name} --> ... <!-- end generated: {name} -->")
    return start.end(), end


def rewritten(text: str, name: str, content: str) -> str:
    start, end = _span(text, name)
    return text[:start] + "\n" + content + "\n\n" + text[end:]


def stale(root: Path = ROOT) -> list[str]:
    """The generated parts under ``root`` that differ from what the code says now."""
    found = []
    for file, name, make in PARTS:
        text = (root / file).read_text(encoding="utf-8")
        if rewritten(text, name, make()) != text:
            found.append(f"{file} ({name})")
    return found


def stale_message(parts: list[str]) -> str:
    return f"generated docs are stale: {', '.join(parts)}; run `{COMMAND}` to rewrite them"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is stale")
    args = parser.parse_args()
    if args.check:
        parts = stale()
        if parts:
            raise SystemExit(stale_message(parts))
        return
    for file, name, make in PARTS:
        path = ROOT / file
        path.write_text(rewritten(path.read_text(encoding="utf-8"), name, make()))


if __name__ == "__main__":
    main()
