"""How `listkit serve` runs the app on uvicorn: a deadline on every request.

The rule: a request's headers and body arrive within ``request_timeout``
seconds of its first byte (of the connection, for the first request), or the
connection is answered 408 and closed. uvicorn times out only idle kept-alive
connections (``timeout_keep_alive``); a client that sends a header a byte at
a time, or a body that never ends, would hold its connection and its task for
ever (slowloris), and a few hundred of them would exhaust the server. The
time the app takes to answer a whole request is not limited here.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("listkit.serve")

_TEXT = b"The request did not arrive in time.\n"
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TEXT), _TEXT)
)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline from a request's first byte
    to its last; ``request_timeout`` is set by ``protocol(seconds)``."""

    request_timeout: float  # seconds; `listkit serve --request-timeout`
    _deadline: asyncio.TimerHandle | None = None
    _headers_done = False  # the current request's headers have arrived

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that says nothing is a request that never arrives

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        if self._deadline is None:  # a further request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_done = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._headers_done else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_408)
        if cycle is not None and not cycle.response_complete:
            # The app, if it waits for the body, hears that the client is gone.
            cycle.disconnected = True
            cycle.message_event.set()
        log.info("closed a request that did not arrive within %gs", self.request_timeout)
        self.transport.close()


def protocol(request_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class for uvicorn's ``http=`` with this deadline."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_timeout": request_timeout})
