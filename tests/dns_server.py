"""A DNS server on loopback serving fixed zones, for `listkit doctor` tests.

Built on dnspython, in a thread, on 127.0.0.1 with a random port (or the
address given: scripts/integration_dkim.py serves dkimverify on port 53) (UDP; the
answers go out whole, whatever their size, which the resolver reads).
Records are given as ``{"name.": [("TXT", '"v=spf1 -all"'), ("A", "192.0.2.1")]}``;
a name not in the zones is NXDOMAIN, a name without that type answers empty.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype


def txt(value: str) -> tuple[str, str]:
    """A TXT record; long values split into strings of 255 as publishers do."""
    chunks = " ".join(
        '"' + value[i : i + 255].replace('"', '\\"') + '"' for i in range(0, len(value), 255)
    )
    return ("TXT", chunks or '""')


class DNSServer:
    def __init__(
        self, zones: dict[str, list[tuple[str, str]]], host: str = "127.0.0.1", port: int = 0
    ):
        """``host`` and ``port`` for a resolver that cannot be told a port (one read from
        a resolv.conf asks port 53), e.g. 127.0.53.1:53; a random port by default."""
        self.zones = {dns.name.from_text(k.lower()): v for k, v in zones.items()}
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host = host
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> DNSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        # An empty datagram wakes the thread from its wait for a query.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", (self.host, self.port))
        self._thread.join()
        self.sock.close()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = dns.name.from_text(question.name.to_text().lower())
        rdtype = question.rdtype
        self.queries.append((name.to_text(), dns.rdatatype.to_text(rdtype)))
        records = self.zones.get(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        matching = [text for kind, text in records if dns.rdatatype.from_text(kind) == rdtype]
        if matching:
            rrset = response.find_rrset(
                response.answer, question.name, dns.rdataclass.IN, rdtype, create=True
            )
            for text in matching:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text), 300)
        return response

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except Exception:
                continue
            self.sock.sendto(self.answer(query).to_wire(max_size=65535), peer)
