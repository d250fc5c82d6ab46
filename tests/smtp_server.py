"""A real SMTP server (aiosmtpd, in a thread) that records messages and injects faults.

It advertises PIPELINING unless started with ``pipelining=False`` (aiosmtpd
reads pipelined commands in order either way).

Faults are set per recipient address as a list of behaviours, one consumed
per attempt; once the list is used up, the address is accepted:

    "450", "452", "550", "421"   reply with that code at RCPT
    "disconnect_rcpt"            drop the connection at RCPT (before DATA)
    "disconnect_after_data"      keep the message, then drop the connection
                                 instead of replying to the final dot
    "timeout_after_data"         keep the message and never reply
    "data_554"                   reply 554 to the final dot (message refused)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.policy import default

from listkit.send.sink import BoundController

REPLIES = {
    "450": "450 4.2.1 Mailbox busy, try later",
    "452": "452 4.2.2 Mailbox full",
    "550": "550 5.1.1 No such user here",
    "421": "421 4.7.0 Too many connections, closing",
}


class FaultHandler:
    def __init__(self, pipelining: bool = True):
        self.pipelining = pipelining  # advertise PIPELINING, as real servers do
        self.ehlo_count = 0
        self.faults: dict[str, list[str]] = {}
        self.messages: list[tuple[str, str, bytes]] = []  # (message_id, rcpt, data)
        self.senders: list[str] = []  # each message's envelope sender (MAIL FROM)
        self.rcpt_attempts: Counter[str] = Counter()
        self.arrived = threading.Condition()  # notified on each message taken

    def wait_for(self, predicate: Callable[[], object], seconds: float = 30.0):
        """Wait until ``predicate()`` holds, checked again as each message arrives
        (no polling); its value. ``seconds`` only bounds a test that would hang."""
        with self.arrived:
            value = self.arrived.wait_for(predicate, seconds)
        if not value:
            raise AssertionError(f"the SMTP server waited {seconds:g} s in vain")
        return value

    def fault(self, address: str, *behaviours: str) -> None:
        self.faults[address] = list(behaviours)

    def _next(self, address: str) -> str | None:
        pending = self.faults.get(address)
        return pending.pop(0) if pending else None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo_count += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_attempts[address] += 1
        behaviour = self._next(address)
        if behaviour in REPLIES:
            return REPLIES[behaviour]
        if behaviour == "disconnect_rcpt":
            server.transport.close()
            return "421 closing"
        if behaviour is not None:
            self.faults.setdefault(address, []).insert(0, behaviour)  # a DATA-stage fault
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        headers = BytesHeaderParser(policy=default).parsebytes(data)
        rcpt = envelope.rcpt_tos[0]
        behaviour = self._next(rcpt)
        if behaviour == "data_554":
            return "554 5.7.1 Message refused as spam"
        with self.arrived:
            self.messages.append((str(headers["Message-ID"]), rcpt, data))
            self.senders.append(envelope.mail_from)
            self.arrived.notify_all()
        if behaviour == "disconnect_after_data":
            server.transport.close()
            return "421 closing"
        if behaviour == "timeout_after_data":
            await asyncio.sleep(30)
        return "250 2.0.0 Queued"

    def count_by_message_id(self) -> Counter[str]:
        return Counter(mid for mid, _rcpt, _data in self.messages)

    def recipients(self) -> Counter[str]:
        return Counter(rcpt for _mid, rcpt, _data in self.messages)


def free_port() -> int:
    """A loopback port nothing listens on (the `free_port` fixture in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(handler=None, pipelining: bool = True, **kwargs) -> tuple[BoundController, FaultHandler]:
    """Listen on a free loopback port (``controller.port``); stop with ``controller.stop()``."""
    handler = handler or FaultHandler(pipelining)
    controller = BoundController(handler, "127.0.0.1", 0, **kwargs)
    controller.start()
    return controller, handler
