"""The twisted.web Site of the HTTP front-end: capped bodies, no tracebacks, no access
log, a deadline for receiving each request, caps on open connections (per source and
in total, authd/rest/connections.py), and a record of open connections so a stop can
close idle keep-alive ones.
"""

from __future__ import annotations

import io
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from authd.rest.connections import ConnectionLimits, ConnectionTable

READ_TIMEOUT = 10.0  # http.read_timeout's default

_CLOSE_POLL = 0.01  # seconds between looks at connections closing on stop


class CappedRequest(Request):
    """Keeps at most `site.max_body` bytes of a body; a longer one is discarded as it
    arrives (declared or chunked) and answered 413, so a big upload costs no memory."""

    body_too_large = False

    content: Any

    def _cap(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_body", 65536))

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted override)
        if length is not None and length > self._cap():
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted override)
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > self._cap():
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        self.content.write(data)


class DeadlineChannel(HTTPChannel):
    """An HTTP/1.1 connection that must send each whole request (line, headers, body)
    within `site.read_timeout`: from connecting for the first request, from its first
    byte for a later one on a kept-alive connection (waiting idle between requests is
    the site's idle timeout). A sender that dribbles a header line now and then
    (slowloris) is cut off at the deadline, however often it sends."""

    site: AuthdSite
    _deadline: Any = None  # IDelayedCall
    _waiting = False  # answered a request; the next one's clock starts at its first byte
    busy = False  # a whole request is in and being answered

    def connectionMade(self) -> None:  # noqa: N802 (Twisted override)
        super().connectionMade()
        if not self.site.admit(self):
            self.site.dropped("connection_refused")
            self._abort()
            return
        self._arm()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted override)
        if self._waiting and data:
            self._waiting = False
            self._arm()
        super().dataReceived(data)

    def allContentReceived(self) -> None:  # noqa: N802 (Twisted override)
        self._disarm()
        self.busy = True
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 (Twisted override)
        self.busy = False
        self._waiting = True  # before super(): it replays pipelined bytes at once
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self._disarm()
        self.site.forget(self)
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.site.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self.site.dropped("too_slow")
        self._abort()

    def _abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class AuthdSite(Site):
    """A Site on an injected reactor that never shows a traceback."""

    displayTracebacks = False
    noisy = False  # no "Starting factory" line per start and stop
    requestFactory = CappedRequest
    # Plain HTTP/1.1 channels, not Twisted's proxy that could switch to HTTP/2 by ALPN
    # (authd does not ship h2): the proxy hides each connection's transport, which a
    # stop needs to close it once its answers are written.
    protocol = DeadlineChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        max_body: int,
        timeout: float = 60.0,
        *,
        read_timeout: float = READ_TIMEOUT,
        limits: ConnectionLimits | None = None,
        dropped: Callable[[str], None] = lambda reason: None,
    ) -> None:
        # Form bodies are never parsed into request.args: the API speaks JSON only.
        super().__init__(resource, reactor=reactor, timeout=timeout, parsePOSTFormSubmission=False)
        self._clock = reactor
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.connections = ConnectionTable(limits or ConnectionLimits(total=512, per_source=32))
        # Counts connections closed by the limits: too_slow, connection_refused, pushed_out.
        self.dropped = dropped
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress | None) -> Any:  # noqa: N802 (Twisted override)
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def admit(self, channel: DeadlineChannel) -> bool:
        """Count a new connection in; False when it must be closed at once. Closes the
        connections that make room for it (see ConnectionTable.admit)."""
        transport: Any = channel.transport
        source = str(getattr(transport.getPeer(), "host", ""))
        evict = self.connections.admit(channel, source, lambda c: bool(getattr(c, "busy", False)))
        if evict is None:
            return False
        for old in evict:
            self.dropped("pushed_out")
            transport = getattr(old, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return True

    def forget(self, channel: DeadlineChannel) -> None:
        self.connections.forget(channel)

    def log(self, request: Any) -> None:
        """No per-request access log: /metrics counts responses by route and status, and
        the audit trail records every authentication and admin action."""

    def close_connections(self, timeout: float) -> Deferred[None]:
        """Close every open connection (after the in-flight requests have finished);
        fires once each has written its last answer and closed, or after `timeout`, when
        the rest are cut. A stop must wait for this: the reactor's own shutdown drops
        whatever a transport still buffers, the answer of a request whose code was used."""
        for channel in list(self.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()
        done: Deferred[None] = Deferred()
        clock: Any = self._clock  # zope interfaces do not type-check as classes
        deadline = clock.seconds() + timeout

        def check() -> None:
            still_open = [t for t in self._transports() if not _closed(t)]
            if still_open and clock.seconds() < deadline:
                clock.callLater(_CLOSE_POLL, check)
                return
            for transport in still_open:
                transport.abortConnection()
            done.callback(None)

        check()
        return done

    def _transports(self) -> list[Any]:
        found = (getattr(channel, "transport", None) for channel in list(self.channels))
        return [t for t in found if t is not None]


def _closed(transport: Any) -> bool:
    """Whether a connection's socket is closed, looking through TLS to the TCP transport
    (which flushes its buffer before it closes)."""
    while not hasattr(transport, "disconnected") and hasattr(transport, "transport"):
        transport = transport.transport
    return bool(getattr(transport, "disconnected", True))
