"""`/healthz`, `/readyz` and `/metrics`: what load balancers and Prometheus poll.

`/healthz` says only that the process answers. `/readyz` asks whether the store and
every first-factor backend respond (authd/readiness.py: own thread, cached, one round
at a time; limited per source like the API); anyone learns ready / not ready (200 /
503), only an `admin` key learns which component failed and how.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from authd.metrics import Metrics
from authd.rest.routes import Call, Reply, Route

Ready = Callable[[], "Deferred[dict[str, str]]"]

_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


class HealthEndpoints:
    def __init__(self, ready: Ready, metrics: Metrics) -> None:
        self._ready = ready
        self._metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/healthz",
                self.healthz,
                "healthz",
                "The process is up",
                "health",
                response=_STATUS,
                rate_limited=False,
            ),
            Route(
                "GET",
                "/readyz",
                self.readyz,
                "readyz",
                "Store and first-factor backends reachable (details for admin keys)",
                "health",
                optional_key=True,
                response=_STATUS,
                statuses=(503,),
            ),
            Route(
                "GET",
                "/metrics",
                self.metrics,
                "metrics",
                "Prometheus metrics",
                "health",
                response={"type": "string"},
                response_type="text/plain",
                rate_limited=False,
            ),
        ]

    def healthz(self, call: Call) -> Reply:
        return Reply(body={"status": "ok"})

    def readyz(self, call: Call) -> Deferred[Reply]:
        detailed = call.key is not None and call.key.allows("admin")

        def answer(checks: dict[str, str]) -> Reply:
            ok = bool(checks) and all(v == "ok" for v in checks.values())
            doc: dict[str, Any] = {"status": "ready" if ok else "not ready"}
            if detailed:
                doc["checks"] = dict(checks)
            return Reply(status=200 if ok else 503, body=doc)

        def broken(failure: Failure) -> Reply:
            # Fail closed: a check that cannot even run means not ready.
            doc: dict[str, Any] = {"status": "not ready"}
            if detailed:
                doc["checks"] = {"ready": f"check failed: {type(failure.value).__name__}"}
            return Reply(status=503, body=doc)

        return self._ready().addCallbacks(answer, broken)

    def metrics(self, call: Call) -> Reply:
        # generate_latest only calls collect(): the registry or the workers' merged view.
        exported: Any = self._metrics.exported
        return Reply(raw=generate_latest(exported), content_type=CONTENT_TYPE_LATEST)
