"""`HttpService`: the HTTP front-end as a Twisted service on an injected reactor.

start binds every `http.listen` address (TLS when `http.tls` is set) and raises if one
cannot be bound (already-bound ones are released); with `http.workers` > 1 each socket
is bound with SO_REUSEPORT, so worker processes share the port; stop stops listening, waits for the
requests in flight (bounded), then closes every connection once its answers are written
(bounded too). `reload` swaps API keys, trusted proxies and limits at once (SIGHUP); a
bad new config raises and the old one stays in force.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import IResource, Resource

from authd.admin import AdminOps
from authd.config.model import Config, HttpConfig
from authd.config.parse import listen_address
from authd.core.username import realm_set
from authd.metrics import Metrics
from authd.portability.ops import PortabilityOps
from authd.rest.admin_api import AdminEndpoints
from authd.rest.apikeys import ApiKeyRing
from authd.rest.clientaddr import parse_networks
from authd.rest.connections import ConnectionLimits
from authd.rest.health import HealthEndpoints, Ready
from authd.rest.issues_api import IssueEndpoints
from authd.rest.openapi import OpenApiEndpoint
from authd.rest.portability_api import PortabilityEndpoints
from authd.rest.ratelimit import Limits
from authd.rest.resource import ApiResource, InFlight, Policy
from authd.rest.routes import Clock, Router
from authd.rest.site import AuthdSite
from authd.rest.tls import context_factory
from authd.rest.validate import AuthEndpoints, Authenticate

log = Logger(namespace="authd.rest.service")
DRAIN_TIMEOUT = 30.0  # seconds a stop waits for in-flight requests
FLUSH_TIMEOUT = 5.0  # then for their answers to be written (a client that never reads)
BACKLOG = 1024  # accept queue of a socket bound here (listenTCP's default is 50)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket with SO_REUSEPORT: several processes bind the
    same address and the kernel spreads new connections among them (one core each)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _drop_counter(metrics: Metrics) -> Callable[[str], None]:
    """Counts connections the limits closed, by reason (a fixed set: see AuthdSite)."""
    children = {
        reason: metrics.drops.labels(frontend="http", reason=reason)
        for reason in ("too_slow", "connection_refused", "pushed_out")
    }
    return lambda reason: children[reason].inc()


def _connection_limits(http: HttpConfig) -> ConnectionLimits:
    return ConnectionLimits(
        total=http.max_connections,
        per_source=http.max_connections_per_source,
        exempt=parse_networks(http.trusted_proxies),
    )


def _policy(http: HttpConfig) -> Policy:
    return Policy(
        keys=ApiKeyRing.from_config(http.api_keys), proxies=parse_networks(http.trusted_proxies)
    )


class Root(Resource):
    """Mounted children (e.g. the self-service portal) first, the API for the rest."""

    def __init__(self, api: ApiResource) -> None:
        super().__init__()
        self._api = api

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802
        if path in self.children:
            return self.children[path]
        request.postpath.insert(0, path)
        request.prepath.pop()
        return self._api

    def render(self, request: Any) -> Any:
        return self._api.render(request)


class HttpService(Service):
    """The HTTP listener(s): validation API, admin API, health, metrics, OpenAPI."""

    def __init__(
        self,
        config: Config,
        authenticate: Authenticate,
        admin: AdminOps | None,
        run_blocking: Callable[..., Deferred[Any]],
        ready: Ready,
        reactor: Any,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        reuse_port: bool | None = None,
        portability: PortabilityOps | None = None,
    ) -> None:
        self._config = config
        self._reactor = reactor
        # None: share the port exactly when the config asks for several processes.
        self._reuse_port = config.http.workers > 1 if reuse_port is None else reuse_port
        clock = clock if clock is not None else reactor
        self._policy = _policy(config.http)
        self._limits = Limits(config.http.rate_limits)
        self._limits.watch(metrics)
        self._in_flight = InFlight()
        self._auth = AuthEndpoints(
            authenticate, self._limits, clock, metrics, realm_set(config.http.realms)
        )
        openapi = OpenApiEndpoint()
        routes = [
            *self._auth.routes(),
            *AdminEndpoints(admin, run_blocking, self._limits, clock).routes(),
            *PortabilityEndpoints(portability, run_blocking).routes(),
            *IssueEndpoints(admin, run_blocking, self._limits, clock).routes(),
            *HealthEndpoints(ready, metrics).routes(),
            openapi.route(),
        ]
        openapi.publish(routes)
        self.router = Router(routes)
        self._api = ApiResource(
            self.router, lambda: self._policy, self._limits, clock, metrics, self._in_flight
        )
        self._root = Root(self._api)
        self.site = AuthdSite(
            self._root,  # type: ignore[arg-type]
            reactor,
            config.http.max_body,
            read_timeout=config.http.read_timeout,
            limits=_connection_limits(config.http),
            dropped=_drop_counter(metrics),
        )
        self._ports: list[Any] = []  # IListeningPort

    @property
    def limits(self) -> Limits:
        """The live rate limits (retuned on reload), for mounted pages that log users in."""
        return self._limits

    def mount(self, name: bytes, resource: IResource) -> None:
        """Serve `resource` under `/<name>/` (the self-service portal's hook)."""
        self._root.putChild(name, resource)

    def startService(self) -> None:  # noqa: N802 (Twisted override)
        http = self._config.http
        if not http.enabled:
            super().startService()
            return
        tls = context_factory(http.tls) if http.tls is not None else None
        try:
            for address in http.listen:
                host, port = listen_address(address)
                if self._reuse_port:
                    p = self._adopt(host, port, tls)
                elif tls is not None:
                    p = self._reactor.listenSSL(port, self.site, tls, interface=host)
                else:
                    p = self._reactor.listenTCP(port, self.site, interface=host)
                self._ports.append(p)
                log.info(
                    "HTTP listening on {host}:{port}{tls}",
                    host=host,
                    port=p.getHost().port,
                    tls=" (TLS)" if tls else "",
                )
        except Exception:
            for p in self._ports:
                p.stopListening()
            self._ports = []
            raise
        super().startService()

    def _adopt(self, host: str, port: int, tls: Any) -> Any:
        """Listen on a socket bound here with SO_REUSEPORT (listenTCP cannot set it)."""
        factory: Any = (
            self.site if tls is None else TLSMemoryBIOFactory(tls, False, cast(Any, self.site))
        )
        sock = reuse_port_socket(host, port)
        try:
            return self._reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
        finally:
            sock.close()  # the reactor holds its own duplicate

    def stopService(self) -> Deferred[Any]:  # noqa: N802 (Twisted override)
        super().stopService()
        ports, self._ports = self._ports, []
        d = gatherResults([maybeDeferred(p.stopListening) for p in ports])
        d.addCallback(lambda _: self._drain())
        d.addCallback(lambda _: self.site.close_connections(FLUSH_TIMEOUT))
        return d

    def _drain(self) -> Deferred[None]:
        d = self._in_flight.drained()
        d.addTimeout(DRAIN_TIMEOUT, self._reactor)

        def gave_up(failure: Any) -> None:
            log.warn(
                "HTTP stop: {n} request(s) still in flight after {t}s",
                n=self._in_flight.count,
                t=DRAIN_TIMEOUT,
            )

        d.addErrback(gave_up)
        return d

    def prepare(self, config: Config) -> Callable[[], None]:
        """Build API keys, proxies and limits for a reload; raises ValueError (naming
        the key, never its content) and changes nothing then. The returned commit swaps
        them in at once and cannot fail. Listen addresses and TLS need a restart."""
        policy = _policy(config.http)
        Limits(config.http.rate_limits, max_keys=1)  # the same checks as the live tables
        connections = _connection_limits(config.http)
        realms = realm_set(config.http.realms)
        # Mounted pages that reload (the portal) prepare their share too.
        mounted = [
            child.prepare(config)
            for child in self._root.children.values()
            if callable(getattr(child, "prepare", None))
        ]

        def commit() -> None:
            for commit_child in mounted:
                commit_child()
            old = self._config.http
            if config.http.listen != old.listen or config.http.tls != old.tls:
                log.warn("HTTP listen addresses or TLS changed; they take effect on restart")
            self._policy = policy
            self._limits.reconfigure(config.http.rate_limits)
            self._auth.realms = realms
            self.site.max_body = config.http.max_body
            self.site.read_timeout = config.http.read_timeout
            self.site.connections.limits = connections
            self._config = config

        return commit

    def reload(self, config: Config) -> None:
        """Prepare and commit at once (raises, keeping the old settings, when unusable)."""
        self.prepare(config)()

    def bound_ports(self) -> list[int]:
        """The ports actually bound (for tests listening on port 0)."""
        return [p.getHost().port for p in self._ports]
