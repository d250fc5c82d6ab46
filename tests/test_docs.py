"""The docs: generated parts are current, links lead somewhere, the README stays short.

The settings table, the command reference and the modules' rules are written
by scripts/docs.py from the code; `make docs` rewrites them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "listkit_scripts_docs", ROOT / "scripts" / "docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_py = _generator()


def test_the_generated_settings_table_cli_reference_and_rules_are_current():
    parts = docs_py.stale()
    assert not parts, docs_py.stale_message(parts)


def test_a_stale_settings_table_is_named_with_the_command_that_rewrites_it(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "workspace.md"
    page.write_text(re.sub(r"(?m)^\| `LISTKIT_TOKEN_PARAM` .*\n", "", page.read_text()))
    parts = docs_py.stale(tmp_path)
    assert parts == ["docs/workspace.md (settings)"]
    assert docs_py.stale_message(parts) == (
        "generated docs are stale: docs/workspace.md (settings); run `make docs` to rewrite them"
    )


def test_every_setting_is_in_the_settings_table_once_with_its_default():
    from listkit.config import Settings

    table = (ROOT / "docs" / "workspace.md").read_text()
    for setting in Settings.declared.values():
        [row] = [ln for ln in table.splitlines() if ln.startswith(f"| `{setting.name}` |")]
        if setting.default and not setting.default_doc:
            assert row.endswith(f"| `{setting.default}` |"), row


def test_every_command_has_its_help_in_the_command_reference():
    reference = (ROOT / "docs" / "cli.md").read_text()
    root = docs_py.click.Context(docs_py.cli, info_name="listkit")
    for path, ctx in docs_py._commands(docs_py.cli, root):
        assert f"\n## {path}\n" in reference, path
        assert ctx.command.get_short_help_str(limit=200) in " ".join(reference.split()), path


def _rule_modules() -> list[Path]:
    return [
        path
        for path in sorted((ROOT / "listkit").rglob("*.py"))
        if docs_py.RULE.search(ast.get_docstring(ast.parse(path.read_text())) or "")
    ]


@pytest.mark.parametrize("module", _rule_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_modules_rule_paragraph_is_in_the_development_page(module):
    page = " ".join((ROOT / "docs" / "development.md").read_text().split())
    docstring = ast.get_docstring(ast.parse(module.read_text()))
    rule = docs_py.RULE.search(docstring)
    first_sentence = docstring[rule.start() :].split("\n\n")[0].replace("``", "`")
    assert f"### `{module.relative_to(ROOT)}`" in page
    assert " ".join(first_sentence.split()) in page


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets are no links."""
    text = re.sub(r"(?ms)^\s*(```|~~~).*?^\s*\1[^\n]*$", "", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in _prose(path.read_text()).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            base = docs_py.anchor(m[1].replace("`", ""))
            anchor, n = base, 0
            while anchor in found:
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def _links() -> list[tuple[Path, str]]:
    return [(doc, target) for doc in DOCS for target in LINK.findall(_prose(doc.read_text()))]


def test_the_docs_link_to_one_another():
    assert any(t.startswith("docs/") for doc, t in _links() if doc.name == "README.md")
    assert any("#" in t for _doc, t in _links())


@pytest.mark.parametrize("doc, target", _links(), ids=lambda v: getattr(v, "name", v))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc, target):
    if re.match(r"[a-z]+:", target):
        return  # http(s), mailto: not ours to check offline
    file, _, anchor = target.partition("#")
    path = (doc.parent / file).resolve() if file else doc
    assert path.exists(), f"{doc.relative_to(ROOT)}: {target} leads to no file"
    if anchor:
        assert anchor in _anchors(path), f"{doc.relative_to(ROOT)}: {target}: no such heading"
