"""`listkit doctor`: what mailbox providers check before they trust a bulk sender.

For the domain of LISTKIT_FROM: SPF (does it allow the relay's address? checked
for the envelope sender's domain, LISTKIT_BOUNCE_ADDRESS's when that is set),
the DKIM selector's public key (is it the workspace's key?), DMARC (present,
its policy, aligned with the From domain), and the one-click unsubscribe URL
(LISTKIT_BASE_URL) answering over HTTPS. Each check says in plain words what
to publish where.

The rule: doctor only reads. DNS questions go to the resolver it is given
(``--dns`` / LISTKIT_DNS) or the system's; the unsubscribe service gets one
GET of ``/healthz``, never a POST (a POST would unsubscribe someone).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from listkit.config import DNS_SERVER, Settings
from listkit.errors import ConfigError, InputError
from listkit.mail import dkim

OK, WARN, FAIL = "ok", "warn", "fail"
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
SPF_VOID_LIMIT = 2
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Check:
    name: str
    status: str
    summary: str
    advice: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "status": self.status,
            "summary": self.summary,
            "advice": self.advice,
        }


class DNSTrouble(Exception):
    """The resolver did not answer (timeout, SERVFAIL): nothing can be concluded."""


class NoSuchName(Exception):
    """DNS answered that the name does not exist (NXDOMAIN)."""


class DNS:
    """The few lookups doctor needs, through one resolver."""

    def __init__(self, server: tuple[str, int] | None = None, timeout: float = 3.0):
        import dns.resolver

        if server is None:
            self.resolver = dns.resolver.Resolver()
        else:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [server[0]]
            self.resolver.port = server[1]
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self.where = f"{server[0]}:{server[1]}" if server else "the system's resolver"

    def _query(self, name: str, rdtype: str):
        """The records of that type; [] when there are none or the name does not exist."""
        try:
            return self._resolve(name, rdtype)
        except NoSuchName:
            return []

    def exists(self, name: str) -> bool:
        """False when DNS says the name does not exist at all (NXDOMAIN)."""
        try:
            self._resolve(name, "TXT")
        except NoSuchName:
            return False
        return True

    def _resolve(self, name: str, rdtype: str):
        import dns.exception
        import dns.resolver

        try:
            return list(self.resolver.resolve(name, rdtype, raise_on_no_answer=False) or [])
        except dns.resolver.NXDOMAIN:
            raise NoSuchName(name) from None
        except dns.resolver.NoAnswer:
            return []
        except dns.resolver.NoNameservers as e:
            raise DNSTrouble(f"no DNS server answered for {name} ({e})") from None
        except dns.exception.Timeout:
            raise DNSTrouble(f"{self.where} did not answer for {name} {rdtype}") from None
        except dns.exception.DNSException as e:
            raise DNSTrouble(f"looking up {name} {rdtype}: {e}") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(name, "TXT")]

    def addresses(self, name: str) -> list[IP]:
        found: list[IP] = []
        for rdtype in ("A", "AAAA"):
            found += [ipaddress.ip_address(r.address) for r in self._query(name, rdtype)]
        return found

    def mx(self, name: str) -> list[str]:
        records = sorted(self._query(name, "MX"), key=lambda r: r.preference)
        return [r.exchange.to_text(omit_final_dot=True) for r in records]


# ---- SPF -------------------------------------------------------------------


class SPFError(Exception):
    """permerror: the record cannot be evaluated as published."""


class SPFUnsupported(Exception):
    """The record uses something doctor does not evaluate (some macros)."""


@dataclass
class SPFResult:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    mechanism: str | None = None  # the term that decided it
    lookups: int = 0
    notes: list[str] = field(default_factory=list)


_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")


class SPF:
    """check_host() of RFC 7208 for one address, with its lookup limits.

    Macros are expanded for the common letters (%{d} %{i} %{s} %{l} %{o} %{h});
    ``ptr`` (deprecated) counts a lookup and never matches; ``exists`` is
    looked up as written.
    """

    def __init__(self, dns_: DNS, ip: IP | None, sender: str, helo: str = ""):
        self.dns = dns_
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.voids = 0
        self.notes: list[str] = []

    def check(self, domain: str) -> SPFResult:
        try:
            result, term = self._check_host(domain, depth=0)
        except SPFError as e:
            return SPFResult("permerror", None, self.lookups, [*self.notes, str(e)])
        except SPFUnsupported as e:
            return SPFResult("unknown", None, self.lookups, [*self.notes, str(e)])
        except DNSTrouble as e:
            return SPFResult("temperror", None, self.lookups, [*self.notes, str(e)])
        return SPFResult(result, term, self.lookups, self.notes)

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > SPF_LOOKUP_LIMIT:
            raise SPFError(
                f"the record needs more than {SPF_LOOKUP_LIMIT} DNS lookups (include, a, mx, "
                "ptr, exists, redirect): receivers stop there and treat SPF as broken"
            )

    def _void(self, found: list) -> list:
        if not found:
            self.voids += 1
            if self.voids > SPF_VOID_LIMIT:
                raise SPFError(
                    f"more than {SPF_VOID_LIMIT} lookups in the record find nothing (RFC 7208 "
                    "4.6.4): remove the terms that name domains without records"
                )
        return found

    def _expand(self, spec: str, domain: str) -> str:
        if "%" not in spec:
            return spec
        local, _, sender_domain = self.sender.rpartition("@")
        values = {
            "d": domain,
            "i": str(self.ip) if self.ip else "",
            "s": self.sender,
            "l": local or "postmaster",
            "o": sender_domain,
            "h": self.helo or domain,
        }

        def one(m: re.Match) -> str:
            letter = m.group(1).lower()
            if letter not in values or m.group(2):
                raise SPFUnsupported(
                    f"macro %{{{m.group(1)}{m.group(2)}}} is not supported by doctor"
                )
            return values[letter]

        spec = re.sub(r"%\{([A-Za-z])([^}]*)\}", one, spec)
        return spec.replace("%%", "%").replace("%_", " ").replace("%-", "%20")

    def records(self, domain: str) -> list[str]:
        return [t for t in self.dns.txt(domain) if re.match(r"(?i)v=spf1(\s|$)", t)]

    def _check_host(self, domain: str, depth: int) -> tuple[str, str | None]:
        if depth > SPF_LOOKUP_LIMIT:
            raise SPFError("includes loop")
        found = self.records(domain)
        if not found:
            return "none", None
        if len(found) > 1:
            raise SPFError(f"{domain} has {len(found)} SPF records; receivers need exactly one")
        terms = found[0].split()[1:]
        redirect = None
        for term in terms:
            if "=" in term and not re.match(r"^[+\-~?]?[A-Za-z0-9]+:", term):
                name, _, value = term.partition("=")
                if name.lower() == "redirect":
                    redirect = value
                continue
            qualifier = _QUALIFIERS.get(term[0])
            body = term[1:] if qualifier else term
            qualifier = qualifier or "pass"
            m = re.match(r"([A-Za-z0-9]+)(?::(.*)|(/.*))?$", body)
            if not m:
                raise SPFError(f"cannot read the term {term!r}")
            mech, arg = m.group(1).lower(), m.group(2) or m.group(3) or ""
            if self._matches(mech, arg, domain, depth):
                return qualifier, term
        if redirect is not None:
            self._count()
            target = self._expand(redirect, domain)
            result, term = self._check_host(target, depth + 1)
            if result == "none":
                raise SPFError(f"redirect={target} has no SPF record")
            return result, term
        return "neutral", None

    def _matches(self, mech: str, arg: str, domain: str, depth: int) -> bool:
        ip = self.ip
        if mech == "all":
            return True
        if mech in ("ip4", "ip6"):
            try:
                net = ipaddress.ip_network(arg, strict=False)
            except ValueError:
                raise SPFError(f"{mech}:{arg} is not a valid network") from None
            if (mech == "ip4") != (net.version == 4):
                raise SPFError(f"{mech}:{arg} is not an IPv{mech[-1]} network")
            return ip is not None and ip.version == net.version and ip in net
        if mech == "include":
            if not arg:
                raise SPFError("include needs a domain")
            self._count()
            target = self._expand(arg, domain)
            result, _term = self._check_host(target, depth + 1)
            if result == "none":
                raise SPFError(f"include:{target} has no SPF record")
            if result in ("permerror", "temperror"):
                raise SPFError(f"include:{target} is broken")
            return result == "pass"
        if mech in ("a", "mx"):
            self._count()
            m = _CIDR.match(arg)
            spec, cidr4, cidr6 = m.group(1), m.group(2), m.group(3)
            target = self._expand(spec, domain) if spec else domain
            if mech == "a":
                hosts = [target]
            else:
                hosts = self._void(self.dns.mx(target))
                if len(hosts) > 10:
                    raise SPFError(f"mx:{target} has more than 10 MX hosts")
            addresses: list[IP] = []
            for host in hosts:
                addresses += self.dns.addresses(host)
            if mech == "a":
                self._void(addresses)
            if ip is None:
                return False
            for addr in addresses:
                if addr.version != ip.version:
                    continue
                prefix = int(cidr4 or 32) if addr.version == 4 else int(cidr6 or 128)
                if ip in ipaddress.ip_network(f"{addr}/{prefix}", strict=False):
                    return True
            return False
        if mech == "ptr":
            self._count()
            self.notes.append("ptr is deprecated (RFC 7208 5.5): doctor does not evaluate it")
            return False
        if mech == "exists":
            self._count()
            target = self._expand(arg, domain)
            return bool(self._void([a for a in self.dns.addresses(target) if a.version == 4]))
        raise SPFError(f"unknown mechanism {mech!r}")


# ---- the checks --------------------------------------------------------------


def organizational(domain: str) -> str:
    """The last two labels: an approximation of the organizational domain (no public
    suffix list), right for example.com, wrong for example.co.uk."""
    return ".".join(domain.split(".")[-2:])


def _relay_addresses(
    dns_: DNS, settings: Settings, relay_ips: Iterable[str]
) -> tuple[str, list[IP]]:
    given = []
    for value in relay_ips:
        try:
            given.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise InputError(f"--relay-ip {value!r} is not an IP address") from None
    if given:
        return ", ".join(map(str, given)), given
    if settings.smtp_url is None:
        return "", []
    host = settings.smtp().host
    try:
        return host, [ipaddress.ip_address(host)]
    except ValueError:
        return host, dns_.addresses(host)


_PRIVATE = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
]


def reachable_from_outside(ip: IP) -> bool:
    """Could receivers see mail coming from ``ip``? (Documentation ranges count as
    public: they stand in for real addresses in examples and tests.)"""
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return False
    return not any(ip.version == n.version and ip in n for n in _PRIVATE)


def check_spf(
    dns_: DNS, domain: str, sender: str, relay: str, ips: list[IP], *, envelope: bool = False
) -> Check:
    """SPF of ``domain``, the envelope sender's domain (what receivers check SPF for);
    ``envelope`` says it is LISTKIT_BOUNCE_ADDRESS's domain, not the From domain."""
    records = SPF(dns_, None, sender).records(domain)
    shown = f"{domain} (the envelope sender, LISTKIT_BOUNCE_ADDRESS)" if envelope else domain
    public = [ip for ip in ips if reachable_from_outside(ip)]
    problem = _spf_records_problem(dns_, domain, shown, records, public, envelope)
    if problem:
        return problem
    if not public:
        return _spf_without_public_relay(dns_, domain, sender, shown, records[0], relay, ips)
    return _spf_of_relay(dns_, domain, sender, shown, records[0], relay, public)


def _spf_records_problem(
    dns_: DNS, domain: str, shown: str, records: list[str], public: list[IP], envelope: bool
) -> Check | None:
    """A failed check when ``domain`` does not exist or has not exactly one SPF record."""
    example_terms = " ".join(f"ip{ip.version}:{ip}" for ip in public) or "ip4:YOUR.RELAY.IP"
    if not records and not dns_.exists(domain):
        setting = "LISTKIT_BOUNCE_ADDRESS" if envelope else "LISTKIT_FROM"
        return Check(
            "SPF",
            FAIL,
            f"{shown} does not exist in DNS (NXDOMAIN): no receiver can check mail sent as it",
            [
                f"Check the domain of {setting} for a typo; a new domain needs its DNS zone "
                "published (with an SPF record) before it can send."
            ],
        )
    if not records:
        return Check(
            "SPF",
            FAIL,
            f"{shown} has no SPF record: receivers cannot tell which servers may send as it",
            [
                f"Publish a TXT record at {domain} naming the servers that send your mail, "
                f"e.g. `v=spf1 {example_terms} ~all` (your SMTP provider's docs give the "
                "include:... to use instead of an address)."
            ],
        )
    if len(records) > 1:
        return Check(
            "SPF",
            FAIL,
            f"{shown} has {len(records)} SPF records; receivers treat that as an error",
            [f"Merge them into one TXT record at {domain} starting with v=spf1."],
        )
    return None


def _spf_without_public_relay(
    dns_: DNS, domain: str, sender: str, shown: str, record: str, relay: str, ips: list[IP]
) -> Check:
    """The relay has no public address to check: a warning, or a failure if the
    record itself is broken."""
    why = (
        "no relay is set (LISTKIT_SMTP_URL)"
        if not relay
        else f"the relay {relay} has no public address ({', '.join(map(str, ips)) or 'none'})"
    )
    walk = SPF(dns_, None, sender).check(domain)
    status = FAIL if walk.result in ("permerror", "temperror") else WARN
    return Check(
        "SPF",
        status,
        f"{shown} publishes `{record}`; {why}, so doctor cannot tell if it is allowed"
        + (f"; the record is broken: {'; '.join(walk.notes)}" if status == FAIL else ""),
        [
            "Run `listkit doctor --relay-ip ADDRESS` with the public address your relay "
            "sends from, to check it is allowed."
        ],
    )


def _spf_of_relay(
    dns_: DNS, domain: str, sender: str, shown: str, record: str, relay: str, public: list[IP]
) -> Check:
    """Does the record allow each public address of the relay?"""
    problems, allowed = [], []
    for ip in public:
        r = SPF(dns_, ip, sender).check(domain)
        if r.result == "pass":
            allowed.append(f"{ip} (by {r.mechanism})")
        elif r.result == "unknown":
            return Check(
                "SPF",
                WARN,
                f"doctor cannot evaluate the SPF record of {shown} ({'; '.join(r.notes)}): "
                "check it with your provider's SPF tester",
            )
        elif r.result in ("permerror", "temperror"):
            fix = (
                f"Fix the TXT record at {domain}: `{record}`."
                if r.result == "permerror"
                else "A DNS server did not answer: run doctor again, or try another --dns."
            )
            return Check(
                "SPF",
                FAIL,
                f"the SPF record of {shown} cannot be evaluated ({r.result}): "
                + "; ".join(r.notes),
                [fix],
            )
        else:
            problems.append((ip, r))
    if problems:
        listed = ", ".join(f"{ip} ({r.result})" for ip, r in problems)
        add = " ".join(f"ip{ip.version}:{ip}" for ip, _r in problems)
        terms = record.split()
        fixed = " ".join([terms[0], add, *terms[1:]])
        return Check(
            "SPF",
            FAIL,
            f"the SPF record of {shown} does not allow your relay {relay}: {listed}",
            [
                f"Change the TXT record at {domain} to `{fixed}` (or add the include:... "
                "your SMTP provider documents).",
                "If your relay is a provider's submission server, it may send from other "
                "addresses than its own: check one of those with --relay-ip.",
            ],
        )
    return Check("SPF", OK, f"{shown} allows your relay {relay}: {', '.join(allowed)}")


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags[key.strip().lower()] = (
                re.sub(r"\s+", "", value) if key.strip() == "p" else value.strip()
            )
    return tags


def check_dkim(dns_: DNS, settings: Settings, from_domain: str) -> tuple[Check, str | None]:
    """The check, and the signing domain (for DMARC alignment) when signing is on."""
    try:
        signer = dkim.signer_for(settings, settings.sender_address()[1])
    except ConfigError as e:
        return Check("DKIM", FAIL, str(e)), None
    if signer is None:
        return (
            Check(
                "DKIM",
                FAIL,
                "messages are not signed: Gmail, Yahoo and Microsoft want DKIM from bulk senders",
                [
                    "Run `listkit dkim keygen`, publish the TXT record it prints, and add the "
                    "two settings it prints to .env."
                ],
            ),
            None,
        )
    name = f"{signer.selector}._domainkey.{signer.domain}"
    ours = dkim.txt_value(signer.key)
    publish = [f"Publish a TXT record at {name} with the value `{ours}`."]
    records = [t for t in dns_.txt(name) if "p=" in t]
    if not records:
        return Check("DKIM", FAIL, f"no DKIM key is published at {name}", publish), signer.domain
    if len(records) > 1:
        return (
            Check(
                "DKIM", FAIL, f"{name} has {len(records)} DKIM records; keep exactly one", publish
            ),
            signer.domain,
        )
    tags = _tags(records[0])
    if not tags.get("p"):
        return (
            Check("DKIM", FAIL, f"the key at {name} is revoked (empty p=)", publish),
            signer.domain,
        )
    try:
        published = base64.b64decode(tags["p"], validate=True)
    except ValueError:
        return (
            Check("DKIM", FAIL, f"the key at {name} is not valid base64", publish),
            signer.domain,
        )
    if published != base64.b64decode(dkim.public_key_b64(signer.key)):
        return (
            Check(
                "DKIM",
                FAIL,
                f"the key published at {name} does not match this workspace's key "
                f"({signer.key_path.name}): receivers will reject every signature",
                [
                    *publish,
                    "Or point LISTKIT_DKIM_KEY at the key that matches the published one.",
                ],
            ),
            signer.domain,
        )
    note = ""
    if "y" in tags.get("t", "").split(":"):
        note = "; t=y marks it as testing: receivers may ignore failures, remove t=y when done"
    return (
        Check(
            "DKIM",
            WARN if note else OK,
            f"{name} publishes this workspace's key (RSA {signer.bits}){note}",
        ),
        signer.domain,
    )


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    if mode == "s":
        return domain == from_domain
    return organizational(domain) == organizational(from_domain)


def check_dmarc(
    dns_: DNS,
    from_domain: str,
    dkim_domain: str | None,
    spf_domain: str,
    *,
    envelope: bool = False,
) -> Check:
    """DMARC of the From domain; ``spf_domain`` is the envelope sender's domain
    (LISTKIT_BOUNCE_ADDRESS's when ``envelope``), which SPF alignment compares."""
    name = f"_dmarc.{from_domain}"
    records = [t for t in dns_.txt(name) if re.match(r"(?i)v=DMARC1\s*(;|$)", t)]
    where = name
    if not records and organizational(from_domain) != from_domain:
        where = f"_dmarc.{organizational(from_domain)}"
        records = [t for t in dns_.txt(where) if re.match(r"(?i)v=DMARC1\s*(;|$)", t)]
    if not records:
        return Check(
            "DMARC",
            FAIL,
            f"{from_domain} has no DMARC record: Gmail and Yahoo require one from bulk senders",
            [
                f"Publish a TXT record at {name} with the value "
                f"`v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}` to start (reports, no "
                "enforcement); move to p=quarantine once the reports show only your mail."
            ],
        )
    if len(records) > 1:
        return Check(
            "DMARC",
            FAIL,
            f"{where} has {len(records)} DMARC records: receivers ignore them all",
            [f"Keep one TXT record at {where}."],
        )
    tags = _tags(records[0])
    policy = tags.get("p", "").lower()
    subdomain = where != name and "sp" in tags
    if subdomain:  # the parent's record speaks for its subdomains through sp=
        policy = tags["sp"].lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(
            "DMARC",
            FAIL,
            f"the DMARC record at {where} has no valid policy (p={policy or 'missing'})",
            [f"Fix the TXT record at {where}: it needs p=none, p=quarantine or p=reject."],
        )
    summary = f"{where}: p={policy}" + (" (subdomain policy)" if subdomain else "")
    return _dmarc_alignment(summary, policy, tags, from_domain, dkim_domain, spf_domain, envelope)


def _dmarc_alignment(
    summary: str,
    policy: str,
    tags: dict[str, str],
    from_domain: str,
    dkim_domain: str | None,
    spf_domain: str,
    envelope: bool,
) -> Check:
    """Do the DKIM signing domain and the envelope sender's domain align with From,
    as the record's adkim= and aspf= ask? ``summary`` names the record and policy."""
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    dkim_ok = dkim_domain is not None and aligned(dkim_domain, from_domain, adkim)
    spf_ok = aligned(spf_domain, from_domain, aspf)
    mode = {"s": "strict", "r": "relaxed"}
    parts = [summary]
    if dkim_domain is None:
        parts.append("no DKIM signature to align")
    else:
        parts.append(
            f"DKIM d={dkim_domain} {'aligned' if dkim_ok else 'NOT aligned'} "
            f"({mode.get(adkim, adkim)}) with From {from_domain}"
        )
    parts.append(
        f"SPF envelope domain {spf_domain}"
        + (" (LISTKIT_BOUNCE_ADDRESS)" if envelope else "")
        + f" {'aligned' if spf_ok else 'NOT aligned'} ({mode.get(aspf, aspf)})"
        + (f" with From {from_domain}" if envelope else "")
    )
    summary = "; ".join(parts)
    advice = []
    status = OK
    if dkim_domain is not None and not dkim_ok:
        status = FAIL if not spf_ok else WARN
        advice.append(
            f"Sign with the From domain: set LISTKIT_DKIM_DOMAIN={from_domain} (or a "
            f"subdomain of {organizational(from_domain)} with relaxed alignment) and publish "
            "the key there."
        )
    if envelope and not spf_ok:
        status = WARN if status == OK else status
        advice.append(
            f"aspf=s aligns SPF only when the envelope domain is {from_domain} itself: set "
            f"LISTKIT_BOUNCE_ADDRESS to an address at {from_domain}, or rely on DKIM alone."
            if aspf == "s"
            else f"The bounce domain {spf_domain} is outside {organizational(from_domain)}: "
            f"use a bounce address at {from_domain} or one of its subdomains for SPF to align."
        )
    if not dkim_ok and not spf_ok:
        status = FAIL
    if policy == "none":
        summary += " (p=none only monitors: receivers act on nothing)"
    return Check("DMARC", status, summary, advice)


def check_unsubscribe(
    settings: Settings, *, ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0
) -> Check:
    try:
        base = settings.public_base_url()
    except ConfigError as e:
        return Check("Unsubscribe", FAIL, str(e), ["Set LISTKIT_BASE_URL to your HTTPS URL."])
    if not base.startswith("https://"):
        return Check(
            "Unsubscribe",
            FAIL,
            f"LISTKIT_BASE_URL is {base}: one-click unsubscribe (RFC 8058) needs HTTPS",
            ["Serve `listkit serve` behind a TLS proxy and set LISTKIT_BASE_URL to https://..."],
        )
    url = base + "/healthz"
    # GET only: a POST to an unsubscribe URL is an unsubscribe.
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "listkit doctor"})
    context = ssl_context or ssl.create_default_context()
    start = (
        "Start `listkit serve` where LISTKIT_BASE_URL points (behind your TLS proxy), "
        "then run doctor again."
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            code = response.status
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return Check(
                "Unsubscribe",
                FAIL,
                f"{url} answers 404: something answers at LISTKIT_BASE_URL, "
                "but not `listkit serve`",
                [start],
            )
        return Check("Unsubscribe", FAIL, f"{url} answers {e.code} {e.reason}", [start])
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            why = f"its certificate is not trusted ({reason.verify_message})"
            fix = "Give the site a certificate receivers trust (e.g. Let's Encrypt)."
        elif isinstance(reason, ConnectionRefusedError):
            why = "nothing answers there (connection refused): the service is not running"
            fix = start
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {timeout:g} s"
            fix = start
        else:
            why = str(reason)
            fix = start
        return Check("Unsubscribe", FAIL, f"{url}: {why}", [fix])
    except TimeoutError:
        return Check("Unsubscribe", FAIL, f"{url}: no answer within {timeout:g} s", [start])
    except OSError as e:
        return Check("Unsubscribe", FAIL, f"{url}: {e}", [start])
    return Check("Unsubscribe", OK, f"{url} answers {code} over HTTPS")


@dataclass
class Report:
    domain: str
    relay: str
    dns: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "relay": self.relay,
            "dns": self.dns,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
        }


def _guarded(name: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DNSTrouble as e:
        return Check(name, FAIL, f"DNS did not answer: {e}", ["Check --dns / LISTKIT_DNS."])


def diagnose(
    settings: Settings,
    *,
    dns_server: str | None = None,
    relay_ips: Iterable[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 3.0,
) -> Report:
    """Run every check for the From domain of ``settings``."""
    sender = settings.sender_address()[1]
    from_domain = sender.rpartition("@")[2].lower()
    server = DNS_SERVER.read(dns_server, "--dns") if dns_server else settings.dns
    resolver = DNS(server, timeout=timeout)
    try:
        relay, ips = _relay_addresses(resolver, settings, relay_ips)
    except DNSTrouble as e:
        relay, ips = "the relay", []
        resolver_note = str(e)
    else:
        resolver_note = ""
    # SPF is checked for the envelope sender (MAIL FROM): the bounce address when set.
    bounce = settings.bounce_address
    envelope = bounce or sender
    spf_domain = envelope.rpartition("@")[2].lower()
    checks = [
        _guarded(
            "SPF", check_spf, resolver, spf_domain, envelope, relay, ips, envelope=bool(bounce)
        )
    ]
    if resolver_note:
        checks[0].summary += f" (resolving the relay: {resolver_note})"
    try:
        dkim_check, dkim_domain = check_dkim(resolver, settings, from_domain)
    except DNSTrouble as e:
        dkim_check = Check("DKIM", FAIL, f"DNS did not answer: {e}", ["Check --dns."])
        dkim_domain = None
    checks.append(dkim_check)
    checks.append(
        _guarded(
            "DMARC",
            check_dmarc,
            resolver,
            from_domain,
            dkim_domain,
            spf_domain,
            envelope=bool(bounce),
        )
    )
    checks.append(check_unsubscribe(settings, ssl_context=ssl_context, timeout=timeout))
    return Report(from_domain, relay, resolver.where, checks)
