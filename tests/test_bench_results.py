"""bench/RESULTS.md keeps every bench's latest figures: a bench cannot be added without its record.

A script in bench/ is a bench when its docstring begins with "Benchmark:";
any other script there is a helper that a bench imports (big_db.py builds the
database two benches measure on). Each bench has a section headed with its
file name, giving the command that runs it and a row of figures with the date
(or "pending", for a run the lead makes).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
RESULTS = BENCH / "RESULTS.md"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _is_bench(script: Path) -> bool:
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    return doc.startswith("Benchmark:")


def _sections() -> dict[str, str]:
    """The text under each ``## name.py`` heading of RESULTS.md, by name (other
    headings, such as the machine's, are not a bench's)."""
    parts = re.split(r"(?m)^## ", RESULTS.read_text())
    named = {p.split("\n", 1)[0].strip().strip("`"): p for p in parts[1:]}
    return {name: text for name, text in named.items() if name.endswith(".py")}


@pytest.mark.parametrize("script", [s for s in SCRIPTS if _is_bench(s)], ids=lambda s: s.name)
def test_every_bench_has_a_section_with_its_command_and_dated_figures(script):
    section = _sections().get(script.name)
    assert section is not None, f"bench/RESULTS.md has no '## {script.name}' section"
    assert f"bench/{script.name}" in section, f"{script.name}: the section gives no command"
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert any(re.search(r"\| (\d{4}-\d\d-\d\d|pending) \|", row) for row in rows), (
        f"{script.name}: the section has no row of figures with a date (or 'pending')"
    )


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not _is_bench(s)], ids=lambda s: s.name)
def test_a_script_that_is_no_bench_is_a_helper_a_bench_imports(script):
    importers = [
        s.name
        for s in SCRIPTS
        if _is_bench(s) and re.search(rf"(?m)^\s*(from|import) {script.stem}\b", s.read_text())
    ]
    assert importers, (
        f"bench/{script.name} has no docstring beginning 'Benchmark:' and no bench imports it: "
        "a bench says so in its docstring and has a section in bench/RESULTS.md"
    )


def test_every_section_of_the_results_is_a_bench_that_exists():
    names = {s.name for s in SCRIPTS if _is_bench(s)}
    assert set(_sections()) <= names, set(_sections()) - names
