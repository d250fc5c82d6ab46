"""Every CSV file listkit writes goes through here; no cell in it runs as a formula.

The rule: Excel, LibreOffice and Google Sheets run a cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return (and some a NUL) as a
formula, so such a text cell is written with a leading apostrophe, which they
show as text. A number is not a formula: ``-5.00`` or ``+3`` stay as they are.
Scripts that need every value exactly read ``--json`` instead.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from listkit.errors import InputError
from listkit.files import private_open

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def safe_cell(value: str) -> str:
    """``value``, or ``'`` + ``value`` when a spreadsheet would run it as a formula."""
    if value.startswith(TRIGGERS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


class Writer:
    """``csv.writer`` whose text cells are made safe; numbers pass as they are."""

    def __init__(self, f: IO[str]):
        self._writer = csv.writer(f)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(c) if isinstance(c, str) else c for c in row])


def writer(f: IO[str]) -> Writer:
    return Writer(f)


def create(path: Path) -> IO[str]:
    """Open a CSV file for writing that only its owner can read: it holds personal data."""
    try:
        return private_open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot be written ({e.strerror})") from None
