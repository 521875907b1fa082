"""The RADIUS front-end alone, for the benchmark: RadiusService with an engine that
accepts at once (no thread hop, no store). Measures what the listener itself costs per
request (parse, Message-Authenticator, password decode, dedup, reply, metrics), the
ceiling the full daemon can never exceed. Usage: radius_listener.py PORT SECRET
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from twisted.internet import reactor as global_reactor  # noqa: E402
from twisted.internet.defer import Deferred, succeed  # noqa: E402

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason  # noqa: E402
from authd.config.model import RadiusClient, RadiusConfig, Secret  # noqa: E402
from authd.metrics import Metrics  # noqa: E402
from authd.radius.service import RadiusService  # noqa: E402

reactor: Any = global_reactor  # an entry point: the one place using the global reactor


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    config = RadiusConfig(
        listen=(f"127.0.0.1:{port}",),
        reject_delay=0.0,
        clients=(
            RadiusClient(
                name="bench", address="127.0.0.1/32", secret=Secret(secret), first_factor="none"
            ),
        ),
    )

    def accept(req: AuthRequest) -> Deferred[Decision]:
        return succeed(Decision(Outcome.ACCEPT, Reason.OK, req.user))

    service = RadiusService(config, accept, reactor, Metrics())
    service.startService()
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
