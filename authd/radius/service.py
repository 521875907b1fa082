"""The RADIUS listener as a Twisted service: bind, reload, drain.

`startService` binds every `radius.listen` address before returning and raises on
failure, so the daemon announces READY=1 only with every socket open. Sockets are made
here (not with `listenUDP`) to set SO_RCVBUF before traffic arrives and, for
`radius.workers` > 1, SO_REUSEPORT so several processes share one port; a small BPF
program spreads requests by Request Authenticator, so a client's retransmits reach the
same worker and its duplicate cache; with `radius.pin_workers` each process is pinned
to its own core (workers.py says when and why).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from authd.config.model import RadiusConfig
from authd.config.parse import listen_address
from authd.metrics import Metrics
from authd.radius.clients import build_client_table
from authd.radius.codec import MAX_LENGTH, RadiusDictionary
from authd.radius.kernel_drops import KernelDrops
from authd.radius.protocol import Authenticate, RadiusHandler, RadiusProtocol, Settings
from authd.radius.reuseport import spread_by_authenticator
from authd.radius.tls import RadsecListener
from authd.radius.tls_context import RadsecMaterial
from authd.radius.tls_context import prepare as prepare_radsec
from authd.workers import allowed_cores, core_for, pin_process, worker_index

log = Logger(namespace="authd.radius.service")

DRAIN_TIMEOUT = 10.0  # seconds stopService waits for decisions before closing anyway


def load_dictionary(path: str) -> RadiusDictionary:
    """The RADIUS dictionary at `path` (the shipped one when empty); ValueError naming
    the file when it cannot be read or parsed."""
    try:
        return RadiusDictionary(path)
    except OSError as exc:
        raise ValueError(f"cannot read the RADIUS dictionary: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 (pyrad's parser raises its own kinds)
        raise ValueError(f"RADIUS dictionary {path or '(shipped)'}: {type(exc).__name__}") from None


def bind_socket(
    host: str, port: int, receive_buffer: int, reuse_port: bool = False
) -> socket.socket:
    """A bound, non-blocking UDP socket; OSError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # With the kernel default (~200 KiB) a burst of requests overflows the queue
        # and the clients' retransmits make it worse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class RadiusService(Service):
    """Every RADIUS socket of the daemon, sharing one request handler."""

    name: str | None = "radius"  # type: ignore[assignment]

    def __init__(
        self,
        config: RadiusConfig,
        authenticate: Authenticate,
        reactor: IReactorTime,
        metrics: Metrics,
    ) -> None:
        self._config = config
        # zope interfaces do not type-check as classes under plain mypy: hold as Any.
        self._reactor: Any = reactor
        self._dictionary = load_dictionary(config.dictionary)
        self._listen = [listen_address(s) for s in config.listen]
        self.handler = RadiusHandler(
            self._settings(config, self._dictionary),
            authenticate,
            reactor,
            metrics,
            duplicate_window=config.duplicate_window,
        )
        self._ports: list[Any] = []  # IListeningPort
        self._kernel_drops = KernelDrops(metrics)
        self.radsec: RadsecListener | None = None
        if config.tls is not None:
            material = prepare_radsec(config, self._dictionary)
            self.radsec = RadsecListener(self.handler, material, reactor, metrics)
        # Summaries of drops that stopped coming are written by this timer, not by the
        # next drop (authd/radius/drop_log.py).
        self._drop_summaries = LoopingCall(self.handler.flush_drop_log)
        self._drop_summaries.clock = reactor
        # Taken before anything pins (see workers.py): a worker gets it in CORES_ENV.
        self._cores = allowed_cores()
        self.pinned_core: int | None = None

    @staticmethod
    def _settings(config: RadiusConfig, dictionary: RadiusDictionary) -> Settings:
        return Settings(
            clients=build_client_table(config, dictionary),
            reject_delay=config.reject_delay,
            challenge_message=config.challenge_message,
        )

    # ---------------------------------------------------------------- lifecycle
    def startService(self) -> None:  # noqa: N802 - Twisted's name
        """Bind every address or none (raising the first OSError)."""
        reuse = self._config.workers > 1
        try:
            if self.radsec is not None:
                assert self._config.tls is not None
                tls_listen = [listen_address(s) for s in self._config.tls.listen]
                self.radsec.start(tls_listen, reuse)
            for host, port in self._listen:
                sock = bind_socket(host, port, self._config.receive_buffer, reuse)
                if reuse:
                    spread_by_authenticator(sock, self._config.workers)
                self._kernel_drops.watch(sock)  # same socket as the reactor's duplicate
                try:
                    listening = self._reactor.adoptDatagramPort(
                        sock.fileno(),
                        sock.family,
                        RadiusProtocol(self.handler),
                        maxPacketSize=MAX_LENGTH + 1,
                    )  # +1: an oversized datagram shows
                finally:
                    sock.close()  # the reactor holds its own duplicate
                self._ports.append(listening)
                host, port = self._address(listening)
                log.info("radius: listening on {host}:{port}", host=host, port=port)
        except Exception:
            for p in self._ports:
                p.stopListening()
            self._ports = []
            self._kernel_drops.forget()
            if self.radsec is not None:
                self.radsec.stop_listening()
            raise
        if self._config.pin_workers:
            core = core_for(worker_index(), self._config.workers, self._cores)
            if core is not None and pin_process(core):
                self.pinned_core = core
        self._drop_summaries.start(self.handler.drop_log.interval, now=False)
        super().startService()

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        """Answer what is in flight (bounded by DRAIN_TIMEOUT), then close the sockets."""
        super().stopService()
        if self._drop_summaries.running:
            self._drop_summaries.stop()
        done: Deferred[None] = Deferred()
        timer = self._reactor.callLater(DRAIN_TIMEOUT, lambda: _fire(done))
        radsec = self.radsec
        if radsec is not None:
            radsec.stop_listening()  # no new connections; open ones get their replies
        drained = self.handler.drain()
        drained.addBoth(lambda _: _fire(done))

        def close(_: object) -> Deferred[Any]:
            if timer.active():
                timer.cancel()
            self._kernel_drops.forget()
            stops = [d for p in self._ports if isinstance(d := p.stopListening(), Deferred)]
            self._ports = []
            if radsec is not None:
                radsec.close_connections()
            return DeferredList(stops)

        result: Deferred[None] = done.addCallback(close).addCallback(lambda _: None)
        return result

    def prepare(self, config: RadiusConfig) -> Callable[[], None]:
        """Build clients, secrets, reply rules and RadSec certificates for a reload;
        raises ValueError (a client, dictionary or certificate problem, named without
        secrets) and changes nothing then. The returned commit swaps them in and cannot
        fail; requests in flight finish with the client they arrived under."""
        dictionary = (
            self._dictionary
            if config.dictionary == self._config.dictionary
            else load_dictionary(config.dictionary)
        )
        settings = self._settings(config, dictionary)
        material: RadsecMaterial | None = None
        if config.tls is not None and self.radsec is not None:
            material = prepare_radsec(config, dictionary)
        elif (config.tls is None) != (self._config.tls is None):
            log.warn("radius: radius.tls was added or removed; it takes effect on restart")
        return lambda: self._commit(config, dictionary, settings, material)

    def reload(self, config: RadiusConfig) -> None:
        """Prepare and commit at once (raises, keeping the old settings, when unusable)."""
        self.prepare(config)()

    def _commit(
        self,
        config: RadiusConfig,
        dictionary: RadiusDictionary,
        settings: Settings,
        material: RadsecMaterial | None,
    ) -> None:
        if [listen_address(s) for s in config.listen] != self._listen:
            log.warn("radius: listen addresses changed; they take effect on restart")
        if config.workers != self._config.workers:
            log.warn("radius: workers changed; it takes effect on restart")
        self.handler.settings = settings
        self.handler.dedup.window = config.duplicate_window
        if material is not None and self.radsec is not None:
            assert config.tls is not None and self._config.tls is not None
            if config.tls.listen != self._config.tls.listen:
                log.warn("radius: radius.tls.listen changed; it takes effect on restart")
            self.radsec.commit(material)
            log.info("radius: reloaded {count} RadSec clients", count=len(material.rules))
        self._dictionary = dictionary
        self._config = config
        log.info("radius: reloaded {count} clients", count=len(settings.clients.clients))

    def bound_tls_ports(self) -> list[tuple[str, int]]:
        """The RadSec (host, port) actually bound, in `radius.tls.listen` order."""
        return self.radsec.bound_ports() if self.radsec is not None else []

    def bound_ports(self) -> list[tuple[str, int]]:
        """The (host, port) actually bound, in `radius.listen` order (port 0 resolved)."""
        return [self._address(p) for p in self._ports]

    @staticmethod
    def _address(port: Any) -> tuple[str, int]:
        addr = port.getHost()
        return (str(addr.host), int(addr.port))


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)
