"""JSON from outside (webhook bodies, saved payloads): read within limits, or refused.

The rule: JSON that arrives from outside is parsed by ``loads`` and nothing
else. It refuses, with an ``InputError`` that says what is wrong and never
quotes the content, what no producer sends and what would cost the reader:
text that is not UTF-8, nesting deeper than ``MAX_DEPTH``, a number longer
than ``MAX_NUMBER`` characters (Python would spend quadratic time on it, or
refuse it with an unexpected ValueError), NaN and Infinity.
"""

from __future__ import annotations

import json
from typing import Any

from listkit.errors import InputError

# The deepest webhook listkit reads (a Stripe event's data.object.metadata, an
# SES notification's mail.headers) nests 5 levels; 32 is room to spare.
MAX_DEPTH = 32
# Amounts in minor units and Unix times need 20 digits at most.
MAX_NUMBER = 40


class _Refused(ValueError):
    pass


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER:
        raise _Refused(f"a number longer than {MAX_NUMBER} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER:
        raise _Refused(f"a number longer than {MAX_NUMBER} digits")
    return float(text)


def _constant(text: str) -> Any:
    raise _Refused(f"{text}, which is not a JSON number")


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests deeper than MAX_DEPTH (walked without recursion)."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for v in level
            if isinstance(v, dict | list)
            for child in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return any(isinstance(v, dict | list) for v in level)


def loads(data: bytes | str) -> Any:
    """The JSON value in ``data`` (UTF-8 when bytes); InputError saying why not."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text") from None
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as e:
        raise InputError(f"not JSON listkit reads: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise InputError(f"nested too deeply (over {MAX_DEPTH} levels)") from None
    if _too_deep(value):
        raise InputError(f"nested too deeply (over {MAX_DEPTH} levels)")
    return value


def loads_object(data: bytes | str) -> dict:
    """``loads`` for a body that must be a JSON object."""
    value = loads(data)
    if not isinstance(value, dict):
        raise InputError("not a JSON object")
    return value
