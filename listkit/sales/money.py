"""Money: decimal text to integer minor units of a currency, and back. Never floats.

Amounts are stored as integers in the currency's minor unit (cents for USD,
yen for JPY) beside their currency code, and never converted between
currencies.

The rule: every amount any importer or webhook reads goes through ``to_minor``
(decimal text in major units) or ``whole_minor`` (a number already in minor
units), and both read ASCII digits only: Python's ``int()`` and ``Decimal()``
take '٣' and '１２' for 3 and 12, which no shop writes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from listkit.errors import InputError, quoted

# ISO 4217 exponents that are not 2.
EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}  # fmt: skip
# ISO 4217 codes of money (current, plus HRK, SLL and ZWL that recent exports still
# carry); not the metals, fund and test codes (XAU, XDR, XTS, XXX...).
CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR
    PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS
    SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW
    UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
""".split()  # noqa: SIM905
)
# Larger amounts than this (in minor units) are refused: no sale is worth 10^15 cents,
# and SQLite's integers end at 2^63.
MAX_MINOR = 10**15
_CLEAN = re.compile(r"[\s$€£¥]")
_PLAIN = re.compile(r"[+-]?[0-9]*(\.[0-9]*)?")
_GROUPED = re.compile(r"[0-9]{1,3}(?:[,.][0-9]{3})+")
_WHOLE = re.compile(r"-?[0-9]{1,20}")


# Where Stripe's API minor unit is not ISO 4217's (docs.stripe.com/currencies, special
# cases): ISK amounts stay two-decimal in the API (100 = 1 krona), MGA is zero-decimal.
STRIPE_EXPONENTS = {"ISK": 2, "MGA": 0}


def from_stripe_minor(amount: int, currency: str) -> int:
    """An amount in Stripe's API minor units as ISO 4217 minor units ('isk' 50000 -> 500)."""
    code = currency.upper()
    shift = exponent(code) - STRIPE_EXPONENTS.get(code, exponent(code))
    if shift >= 0:
        return amount * 10**shift
    whole, rest = divmod(amount, 10**-shift)
    if rest:
        raise InputError(f"{amount} (Stripe's minor units) is not whole {code}")
    return whole


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), 2)


def currency_code(value: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{quoted(value)} is not a currency code")
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InputError(f"{quoted(value)} is not a 3-letter currency code")
    if code not in CURRENCIES:
        raise InputError(f"{quoted(value)} is not an ISO 4217 currency code")
    return code


def _decimal_text(raw: str, currency: str, decimal_comma: bool) -> str:
    """The amount with one '.' as the decimal point and no grouping, or InputError.

    Separators are read by their shape: '1,234.50' and '1.234,50' say which is
    which; '29,00' has a decimal comma (two digits after it cannot be a group of
    thousands). A single separator followed by exactly three digits could be
    either, so it is read as thousands only where decimals would not fit the
    currency ('2,900' JPY, '1,234' USD) and as decimals only where they do
    ('9.999' KWD); otherwise it is an error unless
    ``decimal_comma`` says ',' is the decimal point and '.' groups thousands
    ('1.234' KWD and '1,234' USD are read; '1.500' EUR and '1,234' KWD are not).
    """
    text = raw
    sign = ""
    if text.startswith(("+", "-")):  # (not `text[:1] in "+-"`: "" is in every string)
        sign, text = text[0].replace("+", ""), text[1:]
    bad = InputError(f"{quoted(raw)} is not an amount")
    point, group = (",", ".") if decimal_comma else (".", ",")
    commas, dots = text.count(","), text.count(".")
    if not commas and not dots:
        return sign + text
    if commas and dots:
        last = "," if text.rfind(",") > text.rfind(".") else "."
        if last != point and not decimal_comma:
            point, group = ",", "."  # '1.234,50': the last separator is the decimal one
        whole, _, frac = text.rpartition(point)
        if group in frac or not _GROUPED.fullmatch(whole) or whole.count(point):
            raise bad
        return sign + whole.replace(group, "") + "." + frac
    sep = "," if commas else "."
    if text.count(sep) > 1:  # only thousands groups can repeat
        if not _GROUPED.fullmatch(text):
            raise bad
        return sign + text.replace(sep, "")
    whole, _, frac = text.partition(sep)
    if not whole.isdigit() or not frac.isdigit():
        raise bad
    if len(frac) != 3:
        return sign + whole + "." + frac  # '29,00', '29.5': three digits make no group
    if decimal_comma:
        return sign + whole + ("." + frac if sep == "," else frac)
    decimals_fit = exponent(currency) >= 3
    if sep == "," and not decimals_fit:
        return sign + whole + frac  # '1,234' USD, '2,900' JPY
    if sep == "." and decimals_fit:
        return sign + whole + "." + frac  # '9.999' KWD
    raise InputError(
        f"{quoted(raw)} is ambiguous (thousands or decimals?): write it without separators, or "
        "use --decimal-comma if ',' is the decimal point in this file"
    )


def to_minor(text: str | int, currency: str, *, decimal_comma: bool = False) -> int:
    """'29.00' USD -> 2900; '1,234.5' -> 123450; '29,00' -> 2900; InputError otherwise.

    Refuses amounts that are not finite, too large (``MAX_MINOR``) or carry more
    decimals than the currency has. Negative amounts pass (callers decide).
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise InputError(f"{quoted(text)} is not an amount")
    raw = str(text).strip()
    cleaned = _CLEAN.sub("", raw)
    if cleaned.startswith("(") and cleaned.endswith(")"):
        cleaned = "-" + cleaned[1:-1]
    if len(cleaned) > 40:
        raise InputError(f"{quoted(raw)} is not an amount")
    if not cleaned.isascii():  # digits of another script, or other signs
        raise InputError(f"{quoted(raw)} is not an amount (write it in digits 0-9)")
    cleaned = _decimal_text(cleaned, currency, decimal_comma)
    if not _PLAIN.fullmatch(cleaned) or not any(c.isdigit() for c in cleaned):
        raise InputError(f"{quoted(raw)} is not an amount")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise InputError(f"{quoted(raw)} is not an amount") from None
    scaled = value.scaleb(exponent(currency))
    if abs(scaled) >= MAX_MINOR:
        raise InputError(f"{quoted(raw)} is too large an amount")
    if scaled != scaled.to_integral_value():
        raise InputError(f"{quoted(raw)} has more decimals than {currency.upper()} allows")
    return int(scaled)


def whole_minor(value: object, *, text: bool = False) -> int:
    """An amount already in minor units: a whole number (or, with ``text``, its ASCII
    digits, as a form sends it), at least 0 and below ``MAX_MINOR``. ValueError
    with the reason otherwise; the caller names the field."""
    if text and isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("is not " + ("whole cents" if text else "whole minor units"))
    if value < 0:
        raise ValueError("is negative")
    if value >= MAX_MINOR:
        raise ValueError("is too large an amount")
    return value


def format_minor(amount: int, currency: str) -> str:
    """2900, 'USD' -> 'USD 29.00'."""
    exp = exponent(currency)
    value = Decimal(amount).scaleb(-exp)
    return f"{currency} {value:,.{exp}f}"


def format_amounts(amounts: dict[str, int], empty: str = "") -> str:
    """{'USD': 2900, 'EUR': 500} -> 'EUR 5.00, USD 29.00'; currencies never added up."""
    return ", ".join(format_minor(v, c) for c, v in sorted(amounts.items())) or empty
