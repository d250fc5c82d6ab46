"""Money: decimal text to integer minor units of a currency, and back. Never floats.

Amounts are stored as integers in the currency's minor unit (cents for USD,
yen for JPY) beside their currency code, and never converted between
currencies.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from listkit.errors import InputError

# ISO 4217 exponents that are not 2.
EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_CLEAN = re.compile(r"[\s$€£¥,]")


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), 2)


def currency_code(value: str) -> str:
    code = (value or "").strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise InputError(f"{value!r} is not a 3-letter currency code")
    return code


def to_minor(text: str | int | float, currency: str) -> int:
    """'29.00' USD -> 2900; '1,234.5' -> 123450; InputError for anything else."""
    raw = str(text).strip()
    cleaned = _CLEAN.sub("", raw)
    if cleaned.startswith("(") and cleaned.endswith(")"):
        cleaned = "-" + cleaned[1:-1]
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise InputError(f"{raw!r} is not an amount") from None
    if not value.is_finite():
        raise InputError(f"{raw!r} is not an amount")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InputError(f"{raw!r} has more decimals than {currency.upper()} allows")
    return int(scaled)


def format_minor(amount: int, currency: str) -> str:
    """2900, 'USD' -> 'USD 29.00'."""
    exp = exponent(currency)
    value = Decimal(amount).scaleb(-exp)
    return f"{currency} {value:,.{exp}f}"


def format_amounts(amounts: dict[str, int], empty: str = "") -> str:
    """{'USD': 2900, 'EUR': 500} -> 'EUR 5.00, USD 29.00'; currencies never added up."""
    return ", ".join(format_minor(v, c) for c, v in sorted(amounts.items())) or empty
