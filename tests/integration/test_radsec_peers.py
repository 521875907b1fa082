"""Integration: real RadSec peers in front of a real authd listener process.

- Debian's radsecproxy (UDP -> RadSec relay), fed by radclient: inline OTP accept,
  replay reject, challenge round trip, and its Status-Server probe answered by authd.
- FreeRADIUS 3.2 proxying to authd through its `tls` home_server.

Each relay runs from its own temp config on loopback ports, bounded in time; every
certificate is generated for the test. Client proxy-tls (radsecproxy's certificate,
matched by SAN) answers in `auto` mode; nas-tls (FreeRADIUS's, by subject) inline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.radius import PASSWORD, ServerProcess, totp
from tests.fixtures.radsec import RadsecWorld
from tests.integration.radius_peers import (
    Peer,
    oathtool_code,
    radclient,
    start_freeradius,
    start_radsecproxy,
)

pytestmark = pytest.mark.integration


@dataclass
class Relays:
    radsecproxy: Peer  # presents the proxy certificate: client proxy-tls, auto mode
    freeradius: Peer  # presents the nas certificate: client nas-tls, inline


@pytest.fixture(scope="module")
def relays(
    tmp_path_factory: pytest.TempPathFactory,
    radsec_world: RadsecWorld,
    radsec_server: ServerProcess,
) -> Iterator[Relays]:
    """Both relays in front of one authd; each stopped after the module."""
    port = radsec_server.tls_ports[0][1]
    rsp = start_radsecproxy(tmp_path_factory.mktemp("radsecproxy"), radsec_world, port)
    try:
        fr_dir = tmp_path_factory.mktemp("freeradius")
        fr = start_freeradius(fr_dir, radsec_world, radsec_world.nas, port)
    except BaseException:
        rsp.stop()
        raise
    yield Relays(rsp, fr)
    rsp.stop()
    fr.stop()


@pytest.fixture
def radsecproxy(relays: Relays) -> Peer:
    return relays.radsecproxy


@pytest.fixture
def freeradius(relays: Relays) -> Peer:
    return relays.freeradius


def _challenge_round_trip(peer: Peer, user: str, tmp: Path) -> str:
    """Password alone -> Access-Challenge with State; State + OTP -> the final answer."""
    rc, out = radclient(peer.port, user, PASSWORD, tmp)
    assert "Received Access-Challenge" in out, out + peer.log()[-3000:]
    state = re.search(r"State = (0x[0-9a-f]+)", out)
    assert state is not None, out
    rc, out = radclient(peer.port, user, totp(time.time()), tmp, extra=(f"State = {state[1]}",))
    return out


def test_radsecproxy_inline_accept_with_oathtool(radsecproxy: Peer, tmp_path: Path) -> None:
    """radclient -> radsecproxy (UDP) -> authd (RadSec): password + oathtool code accepts."""
    rc, out = radclient(radsecproxy.port, "rsp", PASSWORD + oathtool_code(), tmp_path)
    assert rc == 0 and "Received Access-Accept" in out, out + radsecproxy.log()[-3000:]


def test_radsecproxy_replay_rejected(radsecproxy: Peer, tmp_path: Path) -> None:
    """The same code through the relay a second time is rejected."""
    typed = PASSWORD + totp(time.time())
    assert radclient(radsecproxy.port, "rspreplay", typed, tmp_path)[0] == 0
    rc, out = radclient(radsecproxy.port, "rspreplay", typed, tmp_path)
    assert rc != 0 and "Received Access-Reject" in out, out


def test_radsecproxy_challenge_round_trip(radsecproxy: Peer, tmp_path: Path) -> None:
    """State issued over RadSec comes back through the relay and completes the login."""
    assert "Received Access-Accept" in _challenge_round_trip(radsecproxy, "rspchal", tmp_path)


def test_radsecproxy_status_server_answered(radsecproxy: Peer) -> None:
    """radsecproxy's Status-Server probe (StatusServer auto, sent at connect) is
    answered by authd over TLS."""
    deadline = time.monotonic() + 10
    while "got status server response from authd" not in radsecproxy.log():
        assert time.monotonic() < deadline, radsecproxy.log()[-3000:]
        time.sleep(0.1)


def test_freeradius_tls_home_server_accept_and_reject(freeradius: Peer, tmp_path: Path) -> None:
    """radclient -> FreeRADIUS 3.2 (proxy, tls home_server) -> authd: an inline accept
    and a wrong code rejected, over a TLS connection FreeRADIUS opened."""
    rc, out = radclient(freeradius.port, "fr", PASSWORD + totp(time.time()), tmp_path)
    assert rc == 0 and "Received Access-Accept" in out, out + freeradius.log()[-4000:]
    assert "(TLS) recv TLS 1.2 Handshake, ServerHello" in freeradius.log()
    rc, out = radclient(freeradius.port, "frchal", PASSWORD + "000000", tmp_path)
    assert "Received Access-Reject" in out, out
