"""Text that came from outside: control characters, and what becomes of them.

The rule: a control character (C0, DEL, C1, and the Unicode line and
paragraph separators) never reaches a header, and text meant to be one line
(a name, a column name, a file name kept as a source) never holds one: each
run of them becomes one space. Text that may span lines (a custom field's
value) keeps its line breaks, as LF; any other control character in it
becomes a space. Headers refuse whatever is left (``mail.mime.check_header``
uses ``CONTROL``).
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A run of control characters with the spaces and tabs around it: one space.
_CONTROL_RUN = re.compile(r"[ \t]*(?:[\x00-\x1f\x7f-\x9f\u2028\u2029][ \t]*)+")
_LINE_BREAK = re.compile(r"\r\n?")
_NOT_LF = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` trimmed, with each run of control characters (line breaks and
    tabs included) and the spaces around it as one space."""
    if CONTROL.search(text) is None:
        return text.strip()
    return _CONTROL_RUN.sub(" ", text).strip()


def lines(text: str) -> str:
    """``text`` trimmed, its line breaks (CRLF, CR, LF) as LF and every other
    control character as a space."""
    if CONTROL.search(text) is None:
        return text.strip()
    return _NOT_LF.sub(" ", _LINE_BREAK.sub("\n", text)).strip()
