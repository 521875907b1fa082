"""One code, two front-ends: a REST validate and a RADIUS Access-Request racing for the
same user and the same one-time code. Exactly one may accept (the store's
compare-and-set decides, not RAM), whichever arrives first."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from tests.fixtures.radius import SECRET, access_request
from tests.rest.harness import PASSWORD, VALIDATE_KEY, start_app, start_radius

ACCEPT, REJECT = 2, 3  # RADIUS codes (RFC 2865)


def test_same_code_over_rest_and_radius_accepts_once(tmp_path: Path) -> None:
    """Five rounds, each with a fresh HOTP code sent at once over both front-ends on one
    reactor and one engine: every round has exactly one accept."""
    app = start_app(tmp_path)
    app.add_user("hank", token="hotp")
    radius = start_radius(app)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = radius.bound_ports()[0][1]
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        outcomes = []
        for round_ in range(5):
            code = app.next_hotp("hank")
            data, _ = access_request("hank", PASSWORD + code, SECRET, identifier=round_)
            rest = app.request_later(
                "POST",
                "/api/v1/validate",
                {"user": "hank", "password": PASSWORD, "otp": code},
                key=VALIDATE_KEY,
            )
            udp.sendto(data, ("127.0.0.1", port))
            reply = None
            deadline = time.monotonic() + 10
            while reply is None and time.monotonic() < deadline:
                app.loop.reactor.iterate(0.002)
                with contextlib.suppress(BlockingIOError):
                    reply = udp.recv(4096)
            assert reply is not None, "no RADIUS reply"
            assert reply[0] in (ACCEPT, REJECT)
            rest_result = app.loop.run(rest).json["result"]
            outcomes.append((rest_result, "accept" if reply[0] == ACCEPT else "reject"))
        for rest_result, radius_result in outcomes:
            assert sorted((rest_result, radius_result)) == ["accept", "reject"], outcomes
    finally:
        udp.close()
        app.loop.run(radius.stopService())
        app.close()
