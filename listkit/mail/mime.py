"""Email messages as bytes, assembled directly: no ``EmailMessage`` tree per recipient.

The stdlib's modern API costs about 2 ms a message; a campaign of 200,000
cannot afford that. ``MessageBuilder`` formats the constant parts once per
campaign and, per recipient, joins headers and quoted-printable bodies.

The rule: a header value that comes from data is checked before it is used.
CR, LF, NUL and other control characters, and RFC 2047 encoded-words that
decode to them, raise ``HeaderInjection`` naming the field and the
subscriber; nothing is built. Non-ASCII values become RFC 2047 encoded-words;
header lines are folded at spaces to stay within 78 characters where a space
allows it, and no line exceeds 998 characters.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from listkit.addresses import ascii_domain
from listkit.errors import HeaderInjection
from listkit.text import CONTROL as _CONTROL

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
# What a display name may hold without quoting (RFC 5322 atext and spaces).
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_ASCII_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _decoded_words(value: str) -> list[str]:
    """The text of each RFC 2047 encoded-word in ``value`` (undecodable ones skipped)."""
    words = []
    for charset, encoding, payload in _ENCODED_WORD.findall(value):
        try:
            raw = (
                base64.b64decode(payload + "=" * (-len(payload) % 4))
                if encoding in "Bb"
                else binascii.a2b_qp(payload.encode("ascii"), header=True)
            )
            words.append(raw.decode(charset.split("*")[0], errors="replace"))
        except (LookupError, ValueError, UnicodeEncodeError):
            continue
    return words


def check_header(value: str, field: str, who: str) -> str:
    """Refuse control characters, raw or hidden in encoded-words; return ``value``."""
    bad = _CONTROL.search(value)
    if bad is None and "=?" in value:
        for word in _decoded_words(value):
            bad = _CONTROL.search(word)
            if bad is not None:
                break
    if bad is not None:
        raise HeaderInjection(
            f"{field} for {who} contains a control character ({bad.group()!r}): refused, "
            "nothing was built"
        )
    return value


def encode_words(text: str) -> str:
    """RFC 2047 base64 encoded-words for ``text``, folded, each within 75 characters."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > 45:  # 45 bytes -> 60 base64 chars
            words.append(chunk)
            chunk = ""
        chunk += char
    if chunk:
        words.append(chunk)
    encoded = [f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words]
    return "\r\n ".join(encoded)


def header_text(text: str) -> str:
    """An unstructured header value (Subject): plain when safe ASCII, else encoded-words."""
    if _ASCII_PRINTABLE.fullmatch(text) and "=?" not in text and len(text) <= 900:
        return text
    return encode_words(text)


def format_address(name: str | None, address: str) -> str:
    """``Name <address>`` with the name quoted or encoded as needed.

    An internationalised domain goes in A-labels (an address cannot be
    RFC 2047-encoded), so the header is right for servers with and without
    SMTPUTF8; only a non-ASCII local part stays UTF-8.
    """
    address = ascii_domain(address) or address
    if not name:
        return f"<{address}>"
    if _ATOMS.fullmatch(name) and "=?" not in name:
        phrase = name
    elif _ASCII_PRINTABLE.fullmatch(name) and "=?" not in name:
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        phrase = encode_words(name)
    return f"{phrase} <{address}>"


# A list's name in List-Id is a description; a longer title is cut (RFC 2919
# sets no limit, but every line must stay within 998 characters).
MAX_LIST_NAME = 100


def fold(line: str, limit: int = 78) -> str:
    """One header line (``Name: value``, perhaps already folded) folded at spaces.

    Each physical line is kept within ``limit`` characters where a space allows
    it (RFC 5322 2.2.3); a longer unbreakable token (a URL) stays whole, on the
    header's first line or a line of its own. Unfolding gives back exactly ``line``.
    """
    if len(line) <= limit and "\r\n" not in line:
        return line
    out = []
    # Never right after "Name:": some parsers would keep the space in the value.
    start = line.find(": ") + 2
    for physical in line.split("\r\n"):
        while len(physical) > limit:
            cut = physical.rfind(" ", start, limit + 1)
            if cut < start or not physical[:cut].strip():
                cut = physical.find(" ", max(limit + 1, start))
                if cut == -1:
                    break
            out.append(physical[:cut])
            physical = physical[cut:]
        out.append(physical)
        start = 1
    return "\r\n".join(out)


# The encoded lines a builder keeps (``QuotedPrintable``): an offer's constant
# lines are met in its first message; a line made of reader data seldom recurs.
QP_LINES_KEPT = 2048
QP_BYTES_KEPT = 1 << 20


def _b2a_qp(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


class QuotedPrintable:
    """UTF-8 quoted-printable with CRLF line ends and lines within 76 characters,
    each distinct line encoded once.

    ``binascii.b2a_qp`` encodes each line on its own (its soft breaks, a space
    at its end, a lone dot depend on that line alone), so a text's encoding is
    its lines' encodings one after the other. A campaign's messages share most
    of their lines, and encoding them was a fifth of building a message.
    """

    def __init__(self) -> None:
        self.lines: dict[str, bytes] = {}
        self.kept = 0

    def __call__(self, text: str) -> bytes:
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        last = lines.pop()  # what follows the last line end ("" after a final one)
        known = self.lines
        out = [known.get(line) or self._line(line) for line in lines]
        if last:
            out.append(_b2a_qp(last))
        return b"".join(out)

    def _line(self, line: str) -> bytes:
        encoded = _b2a_qp(line + "\n")
        if len(self.lines) < QP_LINES_KEPT and self.kept < QP_BYTES_KEPT:
            self.lines[line] = encoded
            self.kept += len(line) + len(encoded)
        return encoded


@dataclass(frozen=True)
class Parts:
    """One recipient's message, before assembly."""

    to_address: str
    to_name: str | None
    subject: str
    text: str
    html: str | None
    message_id: str
    unsubscribe_url: str | None  # None: no list mail (a signup's confirmation)


class MessageBuilder:
    """Builds the messages of one campaign; constant headers are formatted once.

    ``list_id=None`` builds messages that are no list mail (a signup's
    confirmation): no List-Id, no List-Unsubscribe. ``auto_submitted`` marks
    them ``Auto-Submitted: auto-generated`` (RFC 3834), so that no
    autoresponder answers them.
    """

    def __init__(
        self,
        *,
        sender_name: str | None,
        sender_address: str,
        list_id: str | None,
        list_name: str | None = None,
        auto_submitted: bool = False,
    ):
        check_header(sender_name or "", "LISTKIT_FROM", "the sender")
        check_header(sender_address, "LISTKIT_FROM", "the sender")
        self.sender_domain = sender_address.rpartition("@")[2]
        self.boundary = f"=_lk{secrets.token_hex(12)}"  # "=_" never occurs in QP output
        self.list_id = list_id
        self.list_name = list_name
        self._qp = QuotedPrintable()
        self._date_second = 0
        self._date = ""
        self._fixed = (
            f"{fold('From: ' + format_address(sender_name, sender_address))}\r\n"
            "MIME-Version: 1.0\r\n"
            + ("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" if list_id else "")
            + ("Auto-Submitted: auto-generated\r\n" if auto_submitted else "")
        ).encode("ascii")

    def _date_header(self, now: float | None) -> str:
        second = int(time.time() if now is None else now)
        if second != self._date_second:
            self._date_second = second
            self._date = format_datetime(datetime.fromtimestamp(second, UTC))
        return self._date

    def build(
        self,
        parts: Parts,
        *,
        who: str | None = None,
        list_id: str | None = None,
        list_name: str | None = None,
        now: float | None = None,
    ) -> bytes:
        """The whole message as bytes with CRLF line ends."""
        who = who or parts.to_address
        check_header(parts.to_address, "To address", who)
        check_header(parts.to_name or "", "To name", who)
        check_header(parts.subject, "Subject", who)
        check_header(parts.message_id, "Message-ID", who)
        head = (
            f"{fold('To: ' + format_address(parts.to_name, parts.to_address))}\r\n"
            f"{fold('Subject: ' + header_text(parts.subject))}\r\n"
            f"Date: {self._date_header(now)}\r\n"
            f"Message-ID: {parts.message_id}\r\n"
        )
        list_id = list_id or self.list_id
        if list_id is not None:
            check_header(parts.unsubscribe_url or "", "List-Unsubscribe", who)
            list_name = list_name if list_name is not None else self.list_name
            check_header(list_id, "List-Id", who)
            check_header(list_name or "", "List-Id", who)
            if list_name and len(list_name) > MAX_LIST_NAME:
                list_name = list_name[: MAX_LIST_NAME - 3].rstrip() + "..."
            list_phrase = format_address(list_name, list_id) if list_name else f"<{list_id}>"
            head += (
                f"{fold('List-Id: ' + list_phrase)}\r\n"
                f"{fold(f'List-Unsubscribe: <{parts.unsubscribe_url}>')}\r\n"
            )
        head = head.encode()
        text_part = (
            b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + self._qp(parts.text)
        )
        if parts.html is None:
            # SMTP wants a final CRLF; add one only if the text lacks it.
            end = b"" if text_part.endswith(b"\r\n") else b"\r\n"
            return self._fixed + head + text_part + end
        b = self.boundary.encode("ascii")
        html_part = (
            b'Content-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + self._qp(parts.html)
        )
        return b"".join(
            (
                self._fixed,
                head,
                b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n',
                b"--" + b + b"\r\n",
                text_part,
                b"\r\n--" + b + b"\r\n",
                html_part,
                b"\r\n--" + b + b"--\r\n",
            )
        )
