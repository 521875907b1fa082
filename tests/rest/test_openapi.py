"""The OpenAPI document: complete, valid 3.1, and true of the live server (schemathesis)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from authd.config.model import RateLimit, RateLimitsConfig
from tests.rest.harness import BOTH_KEY, App, make_config, start_app

# positive_data_acceptance is left out on purpose: a schema-valid body may still break a
# domain rule the schema cannot state (revoked token, trivial PIN, seed too short), and
# the API answers those 400 by design.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,"
    "negative_data_rejection,missing_required_header,unsupported_method,ignored_auth"
)


def test_document_lists_every_route_with_security(app: App) -> None:
    """Every routed endpoint is in the document, admin ones with the bearer scheme."""
    doc = app.request("GET", "/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(r.method, r.path) for r in app.service.router.routes}
    for path in (
        "/api/v1/validate",
        "/api/v1/otp/check",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/admin/users/{user}/unlock",
        "/api/v1/admin/audit",
    ):
        assert path in doc["paths"], path
    for path, item in doc["paths"].items():
        for op in item.values():
            if path.startswith("/api/v1/admin/") or path in (
                "/api/v1/validate",
                "/api/v1/otp/check",
            ):
                assert op["security"] == [{"apiKey": []}], path
                assert "401" in op["responses"] and "403" in op["responses"]
    body = doc["paths"]["/api/v1/validate"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"user", "password", "otp", "state"}


def test_schemathesis_finds_no_server_error_or_mismatch(tmp_path: Path) -> None:
    """schemathesis fuzzes every operation of the live server (admin key with both
    scopes, so admin and validate paths are reached): no 5xx, and statuses, headers and
    bodies match the document."""
    big = RateLimit(rate=1e6, burst=10**9)
    config = make_config(
        tmp_path,
        limits=RateLimitsConfig(
            per_source=big, per_user=big, failure_delay=0.0, failure_delay_max=0.0
        ),
    )
    app = start_app(tmp_path, config)
    app.add_user("alice", token="totp")
    app.add_user("hank", token="hotp")
    st = Path(sys.executable).with_name("st")
    assert st.exists(), "schemathesis is missing: pip install -e '.[test]'"
    cmd = [
        str(st),
        "run",
        app.base + "/api/v1/openapi.json",
        "-H",
        f"Authorization: Bearer {BOTH_KEY}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,fuzzing,stateful",  # the coverage phase crashes
        # inside hypothesis on Python 3.11 (an AST recursion SystemError), not here
        "-n",
        "25",
        "--seed",
        "5",
        "--workers",
        "2",
        "--no-color",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "10",
    ]
    log = tmp_path / "schemathesis.log"
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            while proc.poll() is None:  # serve while the fuzzer runs, bounded
                if time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError("schemathesis did not finish in 300 s")
                app.loop.reactor.iterate(0.002)
        output = log.read_text()
        assert proc.returncode == 0, output[-6000:]
        assert "passed" in output
        five = app.metrics.registry.get_sample_value
        served = sum(
            s.value
            for m in app.metrics.registry.collect()
            if m.name == "authd_http_responses"
            for s in m.samples
            if s.name.endswith("_total")
            and s.labels["status"].startswith("5")
            and s.labels["route"] != "/readyz"
        )
        assert served == 0
        assert five("authd_http_responses_total", {"route": "/api/v1/validate", "status": "200"})
    finally:
        app.close()
