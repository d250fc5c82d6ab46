"""How listkit's modules import each other, beyond what `lint-imports` checks.

The layers themselves are the import-linter contract in pyproject.toml. Here:
an import inside a function is a lazy load for the CLI's start-up, named below
with its reason, never a way around a cycle; and no module imports another
package's private name (a leading underscore).
"""

from __future__ import annotations

import ast
from pathlib import Path

import listkit

PACKAGE = Path(listkit.__file__).parent

# (importer, imported): why the import waits until the function runs.
LAZY = {
    ("listkit.audience.audiences", "listkit.mail.offers"): "Jinja, for rules that name offers",
    ("listkit.cli.send", "listkit.send.sink"): "aiosmtpd, for `listkit sink` alone",
    ("listkit.cli.serve", "listkit.web"): "Starlette and uvicorn, for `listkit serve`",
    ("listkit.cli.serve", "listkit.web.server"): "uvicorn, for `listkit serve`",
    ("listkit.cli.serve", "listkit.web.pages"): "Starlette, for `listkit form`",
    ("listkit.db", "listkit.addresses"): "email-validator, for one schema step",
    ("listkit.web.pages", "listkit.send.sequence_due"): (
        "the campaign sender, for a service whose workspace has sequences"
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, names, inside a function) for each listkit import of ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                if base.split(".")[0] == "listkit":
                    yield base, [a.name for a in child.names], in_function
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "listkit":
                        yield alias.name, [], in_function
            yield from walk(child, inside)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)


def all_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        for imported, names, in_function in imports(path):
            yield module_name(path), imported, names, in_function


def top_package(module: str) -> str:
    """listkit.sales.reports -> listkit.sales; listkit.db -> listkit.db."""
    return ".".join(module.split(".")[:2])


def test_an_import_inside_a_function_is_only_a_named_lazy_load():
    hidden = {
        (importer, imported)
        for importer, imported, _names, in_function in all_imports()
        if in_function
    }
    assert hidden == set(LAZY)


def test_no_module_imports_a_private_name_of_another_package():
    crossing = [
        f"{importer} imports {imported}.{name}"
        for importer, imported, names, _in_function in all_imports()
        for name in names
        if name.startswith("_")
        and not name.startswith("__")
        and top_package(importer) != top_package(imported)
    ]
    assert crossing == []
