"""DKIM: the workspace's signing key, its DNS record, and signing each message (RFC 6376).

``Signer`` signs a message built by ``mime.MessageBuilder``: relaxed/relaxed
canonicalization, rsa-sha256, every header the builder wrote (From, To,
Subject, Date, Message-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post,
MIME and the rest), the ones a receiver must find once signed once more so a
copy added on the way breaks the signature. Canonicalization is ours (a few
lines of RFC 6376 section 3.4, in C-level bytes operations); the RSA step is
``cryptography`` (OpenSSL): dkimpy signs in pure Python at about 7 ms a
message, OpenSSL's RSA-2048 takes about 0.25 ms, and the rest about 0.02 ms,
since what a campaign's messages share (their constant header lines, the
DKIM-Signature field but its t= and bh=) is canonicalized once per signer.
Tests verify what we sign with dkimpy, an independent verifier.

The rule: the key file is a secret. It is created 0600, and a key file that
others can read or write is refused, as ssh refuses such a key: whoever reads
it can send mail as the domain. Its content never appears in any output.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listkit.config import DKIM_SELECTOR, DOMAIN_NAME
from listkit.errors import ConfigError, ListkitError

KEY_SETTING = "LISTKIT_DKIM_KEY"
SELECTOR_SETTING = "LISTKIT_DKIM_SELECTOR"
DOMAIN_SETTING = "LISTKIT_DKIM_DOMAIN"

# Headers signed once more than they occur: a receiver takes the first From,
# Subject or List-Unsubscribe it finds, so a copy prepended on the way must break
# the signature (RFC 6376 section 8.15). Absent ones (Reply-To, Cc) are signed
# empty, so they cannot be added either.
OVERSIGNED = (
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
# Headers added or changed on the way that must not be signed.
UNSIGNED = frozenset({"dkim-signature", "received", "return-path", "delivered-to"})

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
# sre finds a literal prefix as fast as bytes.find does, and one sub replaces
# every run in one pass (bytes.replace needs a pass per halving of the longest).
_SPACE_RUNS = re.compile(rb"  +")
_SPACE_CRLF = re.compile(rb" \r\n")
MIN_BITS = 1024
# The canonical forms kept per signer (``Signer._fields``): a campaign's constant
# header lines are met in its first message, so a few hundred hold them all.
FIELDS_KEPT = 512
PLANS_KEPT = 64
# Ends the DKIM-Signature field; the signature is written after it.
_B_TAG = b";\r\n\tb="


class KeyExists(ListkitError):
    """keygen would overwrite a key."""


def _one_space(value: bytes) -> bytes:
    """Every run of spaces and tabs as one space."""
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    if b"  " in value:
        value = _SPACE_RUNS.sub(b" ", value)
    return value


def _unfolded(value: bytes) -> bytes:
    """A field value's relaxed form but for the stripping of its ends: every
    CRLF gone (inside a field value a CRLF only ever folds: WSP follows it)."""
    return _one_space(value.replace(b"\r\n", b""))


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """``name:value`` in relaxed form (RFC 6376 3.4.2), with CRLF."""
    return name.strip(b" \t").lower() + b":" + _unfolded(value).strip(b" ") + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """The body in relaxed form (RFC 6376 3.4.4): WSP runs to one space, no
    trailing WSP on a line, no empty lines at the end. ``body`` has CRLF line ends."""
    body = _one_space(body)
    if _SPACE_CRLF.search(body) is not None:
        body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b" ").rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _fold(text: bytes, width: int = 72) -> bytes:
    """Break a long base64 value with folding whitespace (allowed inside b= and p=)."""
    return b"\r\n\t ".join([text[i : i + width] for i in range(0, len(text), width)])


@dataclass(frozen=True)
class _Plan:
    """What signing a message with one sequence of header names needs besides
    the message: which fields are signed in which order, and the DKIM-Signature
    field around its t= and bh= values, as written and in relaxed form."""

    order: tuple[int, ...]  # indexes of the message's fields, in h= order
    before_t: bytes
    before_bh: bytes
    relaxed_before_t: bytes
    relaxed_before_bh: bytes


@dataclass(frozen=True)
class Signer:
    """Signs messages for one domain and selector with one RSA key.

    What stays the same from one message of a campaign to the next is
    canonicalized once: each header line's relaxed form is kept by its exact
    bytes (a line that differs by one byte is a line of its own), and the
    fixed part of the DKIM-Signature field by the header names it signs.
    """

    key: Any  # cryptography RSAPrivateKey
    domain: str
    selector: str
    key_path: Path
    # header line -> (its name in lower case, or None if it is not signed; its relaxed form)
    _fields: dict[bytes, tuple[str | None, bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _plans: dict[tuple[str | None, ...], _Plan] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def bits(self) -> int:
        return self.key.key_size

    def sign(self, message: bytes, *, now: float | None = None) -> bytes:
        """``message`` with a DKIM-Signature header in front."""
        crlf = message.count(b"\r\n")
        if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
            message = _LINE_ENDS.sub(b"\r\n", message)  # sign what SMTP will carry
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        head, sep, body = message.partition(b"\r\n\r\n")
        if not sep:
            head, body = message.rstrip(b"\r\n"), b""
        if b"\r\n " in head or b"\r\n\t" in head:
            # Relaxed canonicalization unfolds: a fold's CRLF goes, its WSP stays.
            head = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
        known = self._fields
        fields = [known.get(line) or self._field(line) for line in head.split(b"\r\n")]
        names = tuple([name for name, _relaxed in fields])
        plan = self._plans.get(names) or self._plan(names)
        bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        t = b"%d" % int(time.time() if now is None else now)
        signed = [fields[i][1] for i in plan.order]
        signed += (plan.relaxed_before_t, t, plan.relaxed_before_bh, bh, b"; b=")
        signature = self.key.sign(b"".join(signed), *_rsa_sha256())
        return b"".join(
            (
                b"DKIM-Signature: ",
                plan.before_t,
                t,
                plan.before_bh,
                bh,
                _B_TAG,
                _fold(base64.b64encode(signature)),
                b"\r\n",
                message,
            )
        )

    def _field(self, line: bytes) -> tuple[str | None, bytes]:
        """One unfolded header line's name as h= lists it (None: not signed) and its
        relaxed form, kept."""
        name, _, value = line.partition(b":")
        lower = name.strip(b" \t").lower()
        # A non-ASCII name is not a header (RFC 5322); listkit writes none.
        signed = lower.isascii() and lower.decode("ascii") not in UNSIGNED
        got = (lower.decode("ascii") if signed else None, relaxed_header(name, value))
        if len(self._fields) < FIELDS_KEPT:
            self._fields[line] = got
        return got

    def _plan(self, names: tuple[str | None, ...]) -> _Plan:
        """The plan for messages whose header lines have these names, kept."""
        # h= lists each header as often as it occurs (the verifier takes them from
        # the bottom up), then the oversigned names once more.
        h = [name for name in names if name is not None]
        h.extend(OVERSIGNED)
        unused: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            if name is not None:
                unused.setdefault(name, []).append(i)
        order = tuple(unused[name].pop() for name in h if unused.get(name))
        before_t = (
            f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={self.domain}; s={self.selector};\r\n\tt="
        ).encode("ascii")
        before_bh = f"; h={_fold_list(':'.join(h))};\r\n\tbh=".encode("ascii")
        # t= and bh= hold no WSP and sit between non-WSP characters: the relaxed
        # field is the relaxed pieces around them.
        plan = _Plan(
            order=order,
            before_t=before_t,
            before_bh=before_bh,
            relaxed_before_t=b"dkim-signature:" + _unfolded(before_t),
            relaxed_before_bh=_unfolded(before_bh),
        )
        if len(self._plans) < PLANS_KEPT:
            self._plans[names] = plan
        return plan


@functools.cache
def _rsa_sha256() -> tuple[Any, Any]:
    """PKCS#1 v1.5 padding and SHA-256, as ``RSAPrivateKey.sign`` takes them."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def _fold_list(h: str, width: int = 68) -> str:
    """Fold the h= list after colons so no line runs long."""
    lines, line = [], ""
    for name in h.split(":"):
        piece = name if not line else ":" + name
        if line and len(line) + len(piece) > width:
            lines.append(line + ":")
            line = name
        else:
            line += piece
    lines.append(line)
    return "\r\n\t ".join(lines)


def _load_private_key(path: Path, setting: str = KEY_SETTING):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}: no file {path}: create a key with `listkit dkim keygen`"
        ) from None
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{setting}: {path} is not a file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{setting}: {path} can be read or changed by others "
            f"(mode {stat.S_IMODE(st.st_mode):03o}): run `chmod 600 {path}`, "
            "and make a new key if others may have read it"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path} ({e.strerror})") from None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{setting}: {path} is encrypted with a passphrase: listkit needs an unencrypted "
            f"key (`openssl pkey -in {path.name} -out new.pem`, then chmod 600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{setting}: {path} is not a PEM private key: create one with `listkit dkim keygen`"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"{setting}: {path} is not an RSA key: DKIM receivers expect rsa-sha256 "
            "(`listkit dkim keygen` makes one)"
        )
    if key.key_size < MIN_BITS:
        raise ConfigError(
            f"{setting}: {path} is a {key.key_size}-bit key: receivers ignore keys under "
            f"{MIN_BITS} bits; make a 2048-bit one with `listkit dkim keygen`"
        )
    return key


def check_domain(value: str, setting: str) -> str:
    """A signing domain, in lower case, named by ``setting`` when it is not one."""
    return DOMAIN_NAME.read(value, setting)


def check_selector(value: str) -> str:
    return DKIM_SELECTOR.read(value, SELECTOR_SETTING)


def key_path(settings) -> Path | None:
    return settings.dkim_key


def signer_for(settings, from_address: str) -> Signer | None:
    """The signer the settings ask for, or None when LISTKIT_DKIM_KEY is unset."""
    path = key_path(settings)
    if path is None:
        for other, value in (
            (SELECTOR_SETTING, settings.dkim_selector),
            (DOMAIN_SETTING, settings.dkim_domain),
        ):
            if value:
                raise ConfigError(
                    f"{other} is set but {KEY_SETTING} is not: set the key file too "
                    "(`listkit dkim keygen` makes one), or remove it to send unsigned"
                )
        return None
    selector = settings.dkim_selector
    if not selector:
        raise ConfigError(
            f"{SELECTOR_SETTING} is not set: add the selector your key is published under "
            f"(the one `listkit dkim keygen` printed) to {settings.workspace / '.env'}"
        )
    domain = settings.dkim_domain or check_domain(
        from_address.rpartition("@")[2], "LISTKIT_FROM's domain"
    )
    return Signer(
        key=_load_private_key(path),
        domain=domain,
        selector=selector,
        key_path=path,
    )


def public_key_b64(key) -> str:
    """The p= value: base64 of the DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def txt_value(key) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64(key)}"


def zone_line(selector: str, domain: str, value: str) -> str:
    """The record as a zone-file line; strings of at most 255 characters."""
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


def default_selector(today: datetime | None = None) -> str:
    """``listkitYYYYMM``: a new selector per rotation keeps the old key valid meanwhile."""
    return f"listkit{(today or datetime.now(UTC)):%Y%m}"


@dataclass(frozen=True)
class NewKey:
    path: Path
    selector: str
    domain: str
    record_name: str
    record_value: str
    zone_line: str
    bits: int


def keygen(
    workspace: Path, *, domain: str, selector: str | None = None, bits: int = 2048
) -> NewKey:
    """Write a new RSA key to ``dkim-SELECTOR.pem`` in the workspace, mode 0600."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    selector = check_selector(selector or default_selector())
    domain = check_domain(domain, DOMAIN_SETTING)
    if bits < 2048 or bits > 4096:
        raise ListkitError(f"--bits must be between 2048 and 4096, not {bits}")
    if not workspace.is_dir():
        raise ListkitError(f"no workspace at {workspace}: run `listkit init {workspace}` first")
    path = workspace / f"dkim-{selector}.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyExists(
            f"{path} already exists: keygen never overwrites a key; choose another --selector"
        ) from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem)
    value = txt_value(key)
    return NewKey(
        path=path,
        selector=selector,
        domain=domain,
        record_name=f"{selector}._domainkey.{domain}",
        record_value=value,
        zone_line=zone_line(selector, domain, value),
        bits=bits,
    )


def status(settings) -> dict[str, Any]:
    """Whether messages are signed, and how; for `listkit config`. Never the key."""
    try:
        from_address = settings.sender_address()[1]
    except ConfigError:
        from_address = ""
    try:
        signer = signer_for(settings, from_address)
    except ConfigError as e:
        return {"signing": False, "error": str(e)}
    if signer is None:
        return {"signing": False}
    return {
        "signing": True,
        "domain": signer.domain,
        "selector": signer.selector,
        "key": str(signer.key_path),
        "bits": signer.bits,
        "record": f"{signer.selector}._domainkey.{signer.domain}",
    }


def describe(info: dict[str, Any]) -> str:
    if info.get("error"):
        return f"DKIM signing: not possible: {info['error']}"
    if not info["signing"]:
        return f"DKIM signing: off (set {KEY_SETTING} and {SELECTOR_SETTING} to sign)"
    return (
        f"DKIM signing: on for {info['domain']} (selector {info['selector']}, "
        f"RSA {info['bits']}, key published at {info['record']})"
    )
