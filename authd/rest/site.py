"""The twisted.web Site of the HTTP front-end: capped bodies, no tracebacks, no access
log, and a record of open connections so a stop can close idle keep-alive ones.
"""

from __future__ import annotations

import io
import weakref
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

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


class AuthdSite(Site):
    """A Site on an injected reactor that never shows a traceback."""

    displayTracebacks = False
    requestFactory = CappedRequest
    # HTTP/1.1 channels themselves, not Twisted's proxy that could switch to HTTP/2 by
    # ALPN (authd does not ship h2): the proxy hides each connection's transport, which
    # a stop needs to close it once its answers are written.
    protocol = HTTPChannel  # type: ignore[assignment]  # the stub names only the proxy

    def __init__(
        self, resource: IResource, reactor: IReactorTime, max_body: int, timeout: float = 60.0
    ) -> None:
        # Form bodies are never parsed into request.args: the API speaks JSON only.
        super().__init__(resource, reactor=reactor, timeout=timeout, parsePOSTFormSubmission=False)
        self._clock = reactor
        self.max_body = max_body
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress | None) -> Any:  # noqa: N802 (Twisted override)
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

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
