"""The request path's shortcuts keep every rule: the API key remembered per keep-alive
connection, statically routed paths, and bound metric children."""

from __future__ import annotations

from dataclasses import replace

from authd.config.model import ApiKey
from authd.rest.routes import Reply, Route, Router
from tests.rest.harness import ADMIN_KEY, VALIDATE_KEY, App, sha256_hex


def test_key_remembered_on_a_connection_follows_header_and_reload(app: App) -> None:
    """On one keep-alive connection, a changed Authorization header is identified anew
    (scope checks still apply) and a reload that drops the key answers 401 at once."""
    assert app.request("GET", "/api/v1/admin/users", key=ADMIN_KEY).status == 200
    assert app.request("GET", "/api/v1/admin/users", key=VALIDATE_KEY).status == 403
    assert app.request("GET", "/api/v1/admin/users", key="not-a-key-0123456789").status == 401
    assert app.request("GET", "/api/v1/admin/users", key=ADMIN_KEY).status == 200
    assert len(app.service.site.channels) == 1  # the same connection throughout
    other = ApiKey(
        name="other", key_sha256=sha256_hex("other-key-0123456789abc"), scopes=("admin",)
    )
    app.service.reload(replace(app.config, http=replace(app.config.http, api_keys=(other,))))
    assert app.request("GET", "/api/v1/admin/users", key=ADMIN_KEY).status == 401
    assert len(app.service.site.channels) == 1


def _handler(name: str) -> object:
    return lambda call: Reply(body={"route": name})


def test_static_path_never_overtakes_an_earlier_parameter_route() -> None:
    """The dict look-up for parameterless paths keeps first-match order: a static path
    shadowed by an earlier parameter route still goes to the earlier one."""
    routes = [
        Route("GET", "/u/{name}", _handler("param"), "p", "", "t"),  # type: ignore[arg-type]
        Route("GET", "/u/me", _handler("static"), "s", "", "t"),  # type: ignore[arg-type]
        Route("GET", "/v/me", _handler("free"), "f", "", "t"),  # type: ignore[arg-type]
        Route("GET", "/v/{name}", _handler("late"), "l", "", "t"),  # type: ignore[arg-type]
    ]
    router = Router(routes)
    assert router.match("GET", ("u", "me"))[0].operation_id == "p"
    assert router.match("GET", ("v", "me"))[0].operation_id == "f"
    assert router.match("GET", ("v", "x")) == (routes[3], {"name": "x"})


def test_response_counters_move_per_route_and_status(app: App) -> None:
    """Bound metric children still count each route and status apart."""

    def count(status: str) -> float:
        value = app.metrics.registry.get_sample_value(
            "authd_http_responses_total", {"route": "/api/v1/otp/check", "status": status}
        )
        return value or 0.0

    assert app.otp_check("hank", app.next_hotp("hank")).json == {"result": "accept"}
    assert app.otp_check("hank", "000000", key="wrong-key-0123456789").status == 401
    assert (
        app.request("POST", "/api/v1/otp/check", {"user": "hank"}, key=VALIDATE_KEY).status == 400
    )
    assert (count("200"), count("401"), count("400")) == (1.0, 1.0, 1.0)
