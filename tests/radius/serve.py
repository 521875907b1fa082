"""A RADIUS listener in its own process for the radclient tests.

Reads a JSON spec (argv[1]): the radius config pieces and which engine to use:
`fake` (tests.fixtures.radius.FakeEngine on the wall clock) or `real` (Engine +
SqlStore + local users on the given database and key file, in a small thread pool).
Prints one JSON line with the bound ports, then serves until SIGTERM, when it drains
and exits 0.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from prometheus_client import generate_latest
from twisted.internet import reactor as global_reactor
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.threadpool import ThreadPool

from authd.config.model import (
    Config,
    LockoutConfig,
    NetscalerGroupAttribute,
    PasswordHashConfig,
    RadiusClient,
    RadiusConfig,
    RadsecClient,
    RadsecConfig,
    ReplyAttribute,
    Secret,
)
from authd.metrics import Metrics
from authd.radius.service import RadiusService
from tests.fixtures.radius import FakeEngine

reactor: Any = global_reactor  # this process is an entry point: the one global reactor


def radsec_config(spec: dict[str, Any]) -> RadsecConfig | None:
    """The optional `tls` part of a spec: RadsecConfig keys as they are, clients too."""
    tls = spec.get("tls")
    if tls is None:
        return None
    clients = tuple(
        RadsecClient(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in c.items()
                if k != "reply_attributes"
            },
            reply_attributes=tuple(ReplyAttribute(**r) for r in c.get("reply_attributes", ())),
        )
        for c in tls.get("clients", ())
    )
    rest = {k: tuple(v) if isinstance(v, list) else v for k, v in tls.items() if k != "clients"}
    return RadsecConfig(clients=clients, **rest)


def radius_config(spec: dict[str, Any]) -> RadiusConfig:
    clients = tuple(
        RadiusClient(
            name=c["name"],
            address=c["address"],
            secret=Secret(c["secret"]),
            require_message_authenticator=c.get("require_message_authenticator", True),
            first_factor=c.get("first_factor", "chain"),
            otp_mode=c.get("otp_mode", "inline"),
            reply_attributes=tuple(ReplyAttribute(**r) for r in c.get("reply_attributes", ())),
        )
        for c in spec["clients"]
    )
    return RadiusConfig(
        listen=tuple(spec.get("listen", ["127.0.0.1:0"])),
        clients=clients,
        reject_delay=spec.get("reject_delay", 0.05),
        challenge_ttl=spec.get("challenge_ttl", 120.0),
        duplicate_window=spec.get("duplicate_window", 30.0),
        netscaler_group=NetscalerGroupAttribute(**spec.get("netscaler", {})),
        workers=spec.get("workers", 1),
        tls=radsec_config(spec),
    )


def real_engine(spec: dict[str, Any], radius: RadiusConfig, metrics: Metrics) -> Any:
    from authd.auth.local import LocalUsers, make_password_hasher
    from authd.batching.threaded import ThreadedEngine
    from authd.crypto import Keyring
    from authd.decision.engine import Engine
    from authd.storage.sql import SqlStore
    from tests.world import decisions_for

    phc = PasswordHashConfig(**spec.get("password_hash", {}))
    defaults = Config()
    config = Config(
        radius=radius,
        local_users=replace(defaults.local_users, password_hash=phc),
        otp=replace(defaults.otp, lockout=LockoutConfig(**spec.get("lockout", {}))),
    )
    keyring = Keyring.load_or_create(spec["keys"])
    threads = spec.get("threads", 4)
    store = SqlStore.open(spec["db"], keyring, pool_size=threads)
    backends = [LocalUsers(store, make_password_hasher(phc))]
    engine = Engine(config, store, backends, keyring.hash_key)
    pool = ThreadPool(minthreads=1, maxthreads=threads, name="auth")
    pool.start()
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    reactor.addSystemEventTrigger("after", "shutdown", store.close)
    return ThreadedEngine(decisions_for(engine), reactor, pool, metrics).authenticate


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    # Warnings and errors to stderr (stdout carries the JSON lines the tests read).
    warnings = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [warnings])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    radius = radius_config(spec)
    metrics = Metrics()
    if spec.get("engine", "fake") == "real":
        authenticate = real_engine(spec, radius, metrics)
    else:
        authenticate = FakeEngine(now=time.time)
    service = RadiusService(radius, authenticate, reactor, metrics)
    service.startService()
    print(
        json.dumps({"ports": service.bound_ports(), "tls_ports": service.bound_tls_ports()}),
        flush=True,
    )

    def stop(*_: object) -> None:
        def done(_: object) -> None:
            text = generate_latest(metrics.registry).decode()
            print(json.dumps({"stopped": True, "metrics": text}), flush=True)
            reactor.stop()

        reactor.callFromThread(lambda: service.stopService().addBoth(done))

    signal.signal(signal.SIGTERM, stop)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
