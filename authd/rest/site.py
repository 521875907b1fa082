"""The twisted.web Site of the HTTP front-end: capped bodies, no tracebacks, no access
log, and a record of open connections so a stop can close idle keep-alive ones.
"""

from __future__ import annotations

import io
import weakref
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Request, Site


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

    def __init__(
        self, resource: IResource, reactor: IReactorTime, max_body: int, timeout: float = 60.0
    ) -> None:
        # Form bodies are never parsed into request.args: the API speaks JSON only.
        super().__init__(resource, reactor=reactor, timeout=timeout, parsePOSTFormSubmission=False)
        self.max_body = max_body
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress | None) -> Any:  # noqa: N802 (Twisted override)
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def log(self, request: Any) -> None:
        """No per-request access log: /metrics counts responses by route and status, and
        the audit trail records every authentication and admin action."""

    def close_connections(self) -> None:
        """Close every open connection (after the in-flight requests have finished)."""
        for channel in list(self.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()
