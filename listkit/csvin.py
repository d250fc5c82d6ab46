"""Every CSV file listkit reads goes through here (``csvout`` writes them).

The rule: a broken record costs one line, never the rows after it, and
reading changes no state of the process. Records come with the physical
line they start on (LF, CRLF or a lone CR each end one). When a record is
broken (an unclosed quote, a stray quote, a field over ``FIELD_LIMIT``) its
first line is rejected with the reason and the lines after it are parsed
again, so one bad quote does not swallow the file.

The csv module's field size limit is process-wide (``csv.field_size_limit``):
raising it for one reader raises it for every other reader in the process,
and setting it back is a race between threads. This module parses with a
private instance of the csv extension, whose limit is its own.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import re
from collections.abc import Iterable, Iterator

from listkit.errors import InputError

FIELD_LIMIT = 1024 * 1024  # characters; a longer field rejects its record
_EOL = re.compile(rb"\r\n|\r|\n")


def _private_csv():
    """A second instance of the ``_csv`` extension module, with its own field limit.

    ``_csv`` keeps its limit in per-module state, so loading the extension
    again gives a limit no other reader sees. Where that cannot be (a build
    with ``_csv`` linked in), the shared module serves with the limit it has.
    """
    spec = importlib.util.find_spec("_csv")
    shared = csv.field_size_limit()
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.field_size_limit(FIELD_LIMIT)
    except Exception:
        return csv, shared
    if csv.field_size_limit() != shared:  # not private after all: undo at once
        csv.field_size_limit(shared)
        return csv, shared
    return module, FIELD_LIMIT


_csv, LIMIT = _private_csv()


def _limit_text() -> str:
    return f"{LIMIT // (1024 * 1024)} MB" if LIMIT >= 1024 * 1024 else f"{LIMIT // 1024} KB"


def records(text: Iterable[str], where: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line, fields) for each record of a CSV text, or (line, reason) for a broken one.

    ``text`` yields lines with their line ends (a file opened with
    ``newline=""``). The lines of the record being parsed are kept in
    ``taken`` (a C-level tap, so the common case costs no Python per line).
    A byte that is not in the text's encoding is an InputError naming
    ``where`` and the line.
    """
    taken: dict[int, str] = {}
    numbers = itertools.count(1)
    source = iter(text)
    lines: Iterator[str] = map(taken.setdefault, numbers, source)
    while True:
        reader = _csv.reader(lines, strict=True)
        try:
            for row in reader:
                line = next(iter(taken))
                taken.clear()
                yield line, row
            return
        except _csv.Error as e:
            held = list(taken.items())
            taken.clear()
            first = held[0][0] if held else next(numbers) - 1
            reason = (
                "unclosed quote"
                if "unexpected end of data" in str(e) or len(held) > 1
                else f"unreadable CSV ({e})"
            )
            if "field larger" in str(e):
                reason = f"too large: a field is over {_limit_text()} (or a quote is not closed)"
            yield first, reason
            again = held[1:]
            lines = map(
                taken.setdefault,
                itertools.chain([n for n, _ in again], numbers),
                itertools.chain([s for _, s in again], source),
            )
        except UnicodeDecodeError as e:
            # The decoder works a block at a time: the bad byte is on the line
            # being read plus the line ends before it in that block.
            line = next(numbers) - 1 + len(_EOL.findall(e.object, 0, e.start))
            name = "UTF-8" if e.encoding.startswith("utf-8") else e.encoding
            raise InputError(
                f"{where}, line {line}: not {name} text (byte 0x{e.object[e.start]:02x}). If the "
                "file is Latin-1 or Windows-1252, run again with --encoding latin-1 (or cp1252); "
                "nothing was imported"
            ) from None
