"""Integration: FreeRADIUS's radclient (Debian freeradius-utils) against a real listener
process over the real Engine and SqlStore (SQLite), plus raw datagrams where radclient
cannot say what we need (identical retransmits, malformed bytes, other sources).

Codes come from oathtool (Debian oathtool) for the first accept, proving the seed and
clock agree with an independent TOTP implementation; later ones from the fixture's own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.crypto import Keyring
from authd.radius import codec
from authd.storage.sql import SqlStore
from tests.fixtures.radius import (
    OTHER_SECRET,
    PASSWORD,
    SECRET,
    SEED_HEX,
    ServerProcess,
    access_request,
    client_spec,
    exchange,
    need,
    real_spec,
    start_server,
    totp,
)

pytestmark = pytest.mark.integration

RADCLIENT = "/usr/bin/radclient"
LENGTH_USERS = {15: "len15", 16: "len16", 17: "len17", 128: "len128"}


def _reopen(spec: dict[str, object]) -> SqlStore:
    """The store a `real_spec` server used, opened again to check what it wrote."""
    return SqlStore.open(str(spec["db"]), Keyring.load_or_create(str(spec["keys"])), pool_size=2)


def _password_for(total: int) -> str:
    return ("p" * (total - 6))[: total - 6]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One listener: client nas1 (inline, group attributes) on 127.0.0.1, a challenge
    client on 127.0.0.2 and another on 127.0.0.3; users for every test."""
    tmp = tmp_path_factory.mktemp("radclient")
    users = ["inline", "replay", "wrong", "chal", "retrans", "groups", "proxy", "seed2", "forti"]
    passwords = dict.fromkeys(users, PASSWORD)
    passwords.update({u: _password_for(total) for total, u in LENGTH_USERS.items()})
    replies = [
        {"group": "vpn-users", "attribute": "Class", "value": "vpn"},
        {"group": "admins", "attribute": "Filter-Id", "value": "admin-acl"},
        {"group": "*", "attribute": "Fortinet-Group-Name", "value": "{group}"},
    ]
    clients = [
        client_spec("nas1", "127.0.0.1/32", reply_attributes=replies),
        client_spec("chal", "127.0.0.2/32", otp_mode="challenge"),
        client_spec("other", "127.0.0.3/32", OTHER_SECRET, otp_mode="challenge"),
    ]
    s = start_server(real_spec(tmp, passwords, clients), tmp)
    yield s
    assert s.stop() == 0, "SIGTERM must drain and exit 0"


def radclient(
    port: int,
    lines: list[str],
    tmp: Path,
    *,
    code: str = "auth",
    filter_lines: list[str] | None = None,
    parallel: int = 1,
    wait: float = 2.0,
) -> tuple[int, str]:
    """Run radclient once (-x, one try, `wait` seconds for each reply, `parallel` packets
    of the file in flight at once); (exit status, output)."""
    prog = need(RADCLIENT, "freeradius-utils")
    infile = tmp / "in.txt"
    infile.write_text("\n".join(lines) + "\n")
    target = str(infile)
    if filter_lines is not None:
        (tmp / "filter.txt").write_text("\n".join(filter_lines) + "\n")
        target += f":{tmp / 'filter.txt'}"
    out = subprocess.run(
        [prog, "-x", "-r", "1", "-t", str(wait), "-p", str(parallel), "-f", target]
        + [f"127.0.0.1:{port}", code, SECRET],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.returncode, out.stdout + out.stderr


def request_lines(
    user: str, password: str, *, ma: bool = True, extra: tuple[str, ...] = ()
) -> list[str]:
    lines = [f'User-Name = "{user}"', f'User-Password = "{password}"', *extra]
    return lines + (["Message-Authenticator = 0x00"] if ma else [])


def oathtool_code() -> str:
    prog = need("oathtool", "oathtool")
    out = subprocess.run(
        [prog, "--totp", SEED_HEX], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def test_inline_accept_with_oathtool_code(server: ServerProcess, tmp_path: Path) -> None:
    """password + an oathtool-made TOTP accepts; the reply's first attribute is
    Message-Authenticator (radclient verifies it)."""
    rc, out = radclient(server.port, request_lines("inline", PASSWORD + oathtool_code()), tmp_path)
    assert rc == 0, out
    received = out.split("Received Access-Accept", 1)[1].splitlines()
    assert received[1].strip().startswith("Message-Authenticator = 0x")


def test_replayed_code_rejected(server: ServerProcess, tmp_path: Path) -> None:
    """The same code in a second request is refused (RFC 6238 §5.2)."""
    lines = request_lines("replay", PASSWORD + totp(time.time()))
    assert radclient(server.port, lines, tmp_path)[0] == 0
    rc, out = radclient(server.port, lines, tmp_path)
    assert rc != 0 and "Received Access-Reject" in out


def test_wrong_code_rejected(server: ServerProcess, tmp_path: Path) -> None:
    """A wrong code gets Access-Reject, carrying only MA and Reply-Message."""
    code = f"{(int(totp(time.time())) + 1) % 1_000_000:06d}"
    rc, out = radclient(server.port, request_lines("wrong", PASSWORD + code), tmp_path)
    assert rc != 0 and "Received Access-Reject" in out
    reply = out.split("Received Access-Reject", 1)[1].splitlines()[1:]
    names = {ln.split("=")[0].strip() for ln in reply if "=" in ln}
    assert names <= {"Message-Authenticator", "Reply-Message"}


def test_missing_message_authenticator_gets_no_reply(server: ServerProcess, tmp_path: Path) -> None:
    """BlastRADIUS: an Access-Request without MA is dropped silently."""
    rc, out = radclient(
        server.port, request_lines("inline", PASSWORD + "123456", ma=False), tmp_path
    )
    assert rc != 0 and "Received" not in out and "No reply" in out


def test_unknown_client_gets_no_reply(server: ServerProcess) -> None:
    """A source address outside every client network gets nothing back."""
    data, _ = access_request("inline", PASSWORD + "123456")
    assert exchange(data, server.port, timeout=0.5, source=("127.0.0.9", 0)) is None


def test_proxy_state_echoed_in_order(server: ServerProcess, tmp_path: Path) -> None:
    """Proxy-State attributes come back in the order sent, after MA."""
    lines = request_lines(
        "proxy", PASSWORD + totp(time.time()), extra=("Proxy-State = 0x01", "Proxy-State = 0x02")
    )
    rc, out = radclient(server.port, lines, tmp_path)
    assert rc == 0, out
    received = out.split("Received Access-Accept", 1)[1]
    assert re.findall(r"Proxy-State = (0x\w+)", received) == ["0x01", "0x02"]


def test_status_server_answered(server: ServerProcess, tmp_path: Path) -> None:
    """Status-Server with MA is answered with Access-Accept."""
    rc, out = radclient(server.port, ["Message-Authenticator = 0x00"], tmp_path, code="status")
    assert rc == 0 and "Received Access-Accept" in out, out


def test_group_reply_attributes_match_filter(server: ServerProcess, tmp_path: Path) -> None:
    """Access-Accept carries Class, Filter-Id and Fortinet-Group-Name from the groups,
    as a radclient filter file checks."""
    rc, out = radclient(
        server.port,
        request_lines("groups", PASSWORD + totp(time.time())),
        tmp_path,
        filter_lines=[
            "Message-Authenticator =* ANY",
            "Class == 0x76706e",
            'Filter-Id == "admin-acl"',
            'Fortinet-Group-Name == "vpn-users"',
            'Fortinet-Group-Name == "admins"',
        ],
    )
    assert rc == 0, out
    assert "Received Access-Accept" in out


@pytest.mark.parametrize("total", sorted(LENGTH_USERS))
def test_password_lengths(server: ServerProcess, tmp_path: Path, total: int) -> None:
    """User-Password of 15, 16, 17 and 128 bytes (password + code) all decode right."""
    typed = _password_for(total) + totp(time.time())
    assert len(typed) == total
    rc, out = radclient(server.port, request_lines(LENGTH_USERS[total], typed), tmp_path)
    assert rc == 0, out


def test_retransmit_identical_reply_code_not_consumed_twice(server: ServerProcess) -> None:
    """The same datagram from the same source port twice: identical bytes back, one
    accept (a fresh request with the same code afterwards is a replay)."""
    import socket

    data, auth = access_request("retrans", PASSWORD + totp(time.time()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        s.sendto(data, ("127.0.0.1", server.port))
        first = s.recv(8192)
        s.sendto(data, ("127.0.0.1", server.port))
        second = s.recv(8192)
    assert first == second and first[0] == codec.ACCESS_ACCEPT
    assert codec.verify_reply(first, auth, SECRET.encode())
    again, _ = access_request("retrans", PASSWORD + totp(time.time()), identifier=99)
    reply = exchange(again, server.port)
    assert reply is not None and reply[0] == codec.ACCESS_REJECT


def test_malformed_datagrams_leave_listener_serving(server: ServerProcess, tmp_path: Path) -> None:
    """Garbage, truncated and oversized datagrams get no reply; a good request after
    them is answered."""
    good, _ = access_request("seed2", PASSWORD + totp(time.time()))
    garbage = [
        b"",
        b"\x01",
        b"\x01\x02\x00\x14" + bytes(10),
        good[:-3],
        good + b"xx",
        b"\x01\x01\x00\x16" + bytes(16) + b"\x01\x00",
        bytes(5000),
        b"\x63\x01\x00\x14" + bytes(16),
        b"\x01\x01\x00\x17" + bytes(16) + b"\x01\x09a",
    ]
    for g in garbage:
        assert exchange(g, server.port, timeout=0.2) is None
    rc, out = radclient(server.port, ["Message-Authenticator = 0x00"], tmp_path, code="status")
    assert rc == 0, out
    reply = exchange(good, server.port)
    assert reply is not None and reply[0] == codec.ACCESS_ACCEPT


def _state_from(out: str) -> str:
    m = re.search(r"State = (0x[0-9a-f]+)", out)
    assert m, out
    return m.group(1)


def test_challenge_round_trip_with_radclient(server: ServerProcess, tmp_path: Path) -> None:
    """Challenge client: password -> Access-Challenge with State and Reply-Message;
    State + code -> Accept; reusing the State -> Reject; a State from this client sent
    from another client's address -> Reject."""
    src_chal = ("127.0.0.2", 0)
    data, auth = access_request("chal", PASSWORD, identifier=1)
    reply = exchange(data, server.port, source=src_chal)
    assert reply is not None and reply[0] == codec.ACCESS_CHALLENGE
    assert codec.verify_reply(reply, auth, SECRET.encode())
    ch = codec.decode(reply)
    state = ch.first(codec.STATE)
    assert state is not None and ch.first(codec.REPLY_MESSAGE)
    code = totp(time.time())
    data2, _ = access_request("chal", code, state=state, identifier=2)
    ok = exchange(data2, server.port, source=src_chal)
    assert ok is not None and ok[0] == codec.ACCESS_ACCEPT
    data3, _ = access_request("chal", code, state=state, identifier=3)
    reuse = exchange(data3, server.port, source=src_chal)
    assert reuse is not None and reuse[0] == codec.ACCESS_REJECT
    # another client's State
    data4, _ = access_request("chal", PASSWORD, identifier=4)
    st2 = codec.decode(exchange(data4, server.port, source=src_chal) or b"").first(codec.STATE)
    data5, _ = access_request("chal", totp(time.time() + 30), OTHER_SECRET, state=st2, identifier=5)
    foreign = exchange(data5, server.port, source=("127.0.0.3", 0))
    assert foreign is not None and foreign[0] == codec.ACCESS_REJECT


def _own_server(tmp_path: Path, user: str, client: dict[str, object]) -> ServerProcess:
    """A listener of the test's own: one local user, one client on 127.0.0.1 (where
    radclient sends from), for client settings the shared server cannot have."""
    return start_server(real_spec(tmp_path, {user: PASSWORD}, [client]), tmp_path)


def test_challenge_round_trip_driven_by_radclient(tmp_path: Path) -> None:
    """radclient itself: password -> Access-Challenge (State, Reply-Message, Prompt =
    No-Echo); State + code -> Access-Accept; the same State again -> Access-Reject."""
    s = _own_server(tmp_path, "bob", client_spec("vpn", otp_mode="challenge"))
    try:
        rc, out = radclient(s.port, request_lines("bob", PASSWORD), tmp_path)
        assert rc != 0 and "Received Access-Challenge" in out, out
        assert 'Reply-Message = "' in out
        assert "Prompt = No-Echo" in out, out  # RFC 2869 §5.10: the NAS hides the code
        state = _state_from(out)
        answer = request_lines("bob", totp(time.time()), extra=(f"State = {state}",))
        rc, out = radclient(s.port, answer, tmp_path)
        assert rc == 0 and "Received Access-Accept" in out, out
        rc, out = radclient(s.port, answer, tmp_path)
        assert rc != 0 and "Received Access-Reject" in out, out
    finally:
        assert s.stop() == 0


def test_fortigate_style_client_finds_message_authenticator_first_in_every_reply(
    server: ServerProcess,
) -> None:
    """A FortiGate 7.4-style client drops any reply without a valid Message-Authenticator:
    Accept, Reject and Challenge all carry it, first, and verify with the client's secret
    (as does the Response Authenticator)."""
    replies = []
    data, auth = access_request("forti", PASSWORD + totp(time.time()), identifier=11)
    replies.append((exchange(data, server.port), auth, codec.ACCESS_ACCEPT))
    data, auth = access_request("forti", PASSWORD + "000000", identifier=12)
    replies.append((exchange(data, server.port), auth, codec.ACCESS_REJECT))
    data, auth = access_request("forti", PASSWORD, identifier=13)
    challenge = exchange(data, server.port, source=("127.0.0.2", 0))  # the challenge client
    replies.append((challenge, auth, codec.ACCESS_CHALLENGE))
    for reply, auth, code in replies:
        assert reply is not None and reply[0] == code
        assert codec.decode(reply).attributes[0][0] == codec.MESSAGE_AUTHENTICATOR
        assert codec.verify_reply(reply, auth, SECRET.encode())


def test_openvpn_style_inline_client_without_message_authenticator(tmp_path: Path) -> None:
    """An OpenVPN-style client (radiusplugin: PAP, password and code typed together, no
    Message-Authenticator) works once the operator sets require_message_authenticator:
    false for it: radclient's request without one is accepted, its replay rejected."""
    openvpn = client_spec("openvpn", otp_mode="inline", require_message_authenticator=False)
    s = _own_server(tmp_path, "carol", openvpn)
    try:
        typed = PASSWORD + oathtool_code()
        rc, out = radclient(s.port, request_lines("carol", typed, ma=False), tmp_path)
        assert rc == 0 and "Received Access-Accept" in out, out
        rc, out = radclient(s.port, request_lines("carol", typed, ma=False), tmp_path)
        assert rc != 0 and "Received Access-Reject" in out, out
    finally:
        assert s.stop() == 0


def _padded_request(user: str, typed: str, total: int) -> tuple[bytes, bytes, list[bytes]]:
    """An Access-Request of exactly `total` octets, the rest filled with Proxy-States
    (as a chain of proxies would): (datagram, authenticator, the Proxy-State values)."""
    auth = bytes(range(16))
    base, _ = access_request(user, typed, authenticator=auth)
    room = total - len(base)
    sizes = []
    while room > 2 * 255:
        sizes.append(255)
        room -= 255
    sizes += [room // 2, room - room // 2]  # both at least 3 octets: a valid TLV
    values = [bytes([i + 1]) * (size - 2) for i, size in enumerate(sizes)]
    data, _ = access_request(user, typed, authenticator=auth, proxy_states=tuple(values))
    assert len(data) == total
    return data, auth, values


def test_full_size_request_gets_a_reply_that_fits_and_retransmits_decide_nothing(
    tmp_path: Path,
) -> None:
    """A 4096-octet Access-Request of a two-letter user padded with Proxy-State, a wrong
    code alone in User-Password (`first_factor: none`, one 16-octet block): an
    Access-Reject with the generic Reply-Message would be 4099 octets. It fits in 4096
    octets (Reply-Message trimmed, every Proxy-State echoed in order), and two
    retransmissions get the same bytes while the failure is counted and audited once."""
    gateway = client_spec("nas1", "127.0.0.1/32", first_factor="none")
    spec = real_spec(tmp_path, {"ab": PASSWORD}, [gateway])
    server = start_server(spec, tmp_path)
    try:
        wrong = f"{(int(totp(time.time())) + 500_000) % 1_000_000:06d}"
        data, auth, values = _padded_request("ab", wrong, codec.MAX_LENGTH)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(3)
            replies = []
            for _ in range(3):
                s.sendto(data, ("127.0.0.1", server.port))
                replies.append(s.recv(8192))
    finally:
        assert server.stop() == 0
    first = replies[0]
    assert replies == [first] * 3
    assert len(first) <= codec.MAX_LENGTH and first[0] == codec.ACCESS_REJECT
    assert codec.verify_reply(first, auth, SECRET.encode())
    assert codec.decode(first).all(codec.PROXY_STATE) == values
    store = _reopen(spec)
    try:
        user = store.get_user("ab")
        assert user is not None and user.failures == 1
        assert [e.result for e in store.query_audit(user="ab")] == ["reject"]
    finally:
        store.close()


def test_duplicate_cache_is_per_process_a_retransmit_after_kill_is_a_replay(
    tmp_path: Path,
) -> None:
    """As the README says: after a kill -9 and restart, a retransmission of a request
    accepted before it is decided again, and its code being used, it is rejected as a
    replay (never a second accept)."""
    spec = real_spec(tmp_path, {"restart": PASSWORD}, [client_spec("nas1", "127.0.0.1/32")])
    data, _ = access_request("restart", PASSWORD + totp(time.time()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:  # one source port
        nas.bind(("127.0.0.1", 0))
        nas.settimeout(3)
        first = start_server(spec, tmp_path)
        try:
            nas.sendto(data, ("127.0.0.1", first.port))
            before = nas.recv(8192)
        finally:
            first.proc.kill()
            first.proc.wait(10)
        spec["listen"] = [f"127.0.0.1:{first.port}"]
        second = start_server(spec, tmp_path)
        try:
            nas.sendto(data, ("127.0.0.1", second.port))
            after = nas.recv(8192)
        finally:
            assert second.stop() == 0
    assert (before[0], after[0]) == (codec.ACCESS_ACCEPT, codec.ACCESS_REJECT)
    store = _reopen(spec)
    try:
        assert [e.reason for e in store.query_audit(user="restart")] == ["replay", "ok"]
    finally:
        store.close()


@pytest.mark.parametrize("first_factor", ["chain", "none"])
def test_parallel_guess_burst_locks_after_exactly_max_attempts(
    tmp_path: Path, first_factor: str
) -> None:
    """radclient sends 100 wrong codes at once (-p 100), with the password (chain) or
    alone (OTP-only client), to a listener with max_attempts 3: exactly 3 are evaluated
    (failure counter and audit rows), the other 97 are refused as locked, and so is the
    right code sent next (after the burst with the password; last in the same burst
    OTP-only, where arrival order is decision order)."""
    gateway = client_spec("nas1", "127.0.0.1/32", first_factor=first_factor)
    spec = real_spec(tmp_path, {"burst": PASSWORD}, [gateway])
    spec |= {"lockout": {"max_attempts": 3, "auto_unlock_after": None}, "threads": 8}
    server = start_server(spec, tmp_path)
    try:
        right = totp(time.time())
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        prefix = PASSWORD if first_factor == "chain" else ""
        burst = [request_lines("burst", prefix + wrong) for _ in range(100)]
        if first_factor == "none":
            burst.append(request_lines("burst", prefix + right))
        lines = [line for packet in burst for line in [*packet, ""]]
        # A hundred password checks on a loaded test machine: replies may take seconds.
        rc, out = radclient(server.port, lines, tmp_path, parallel=len(burst), wait=30)
        assert out.count("Received Access-Reject") == len(burst), out[-2000:]
        if first_factor == "chain":
            rc, out = radclient(server.port, request_lines("burst", prefix + right), tmp_path)
            assert rc != 0 and "Received Access-Reject" in out
    finally:
        assert server.stop() == 0
    store = _reopen(spec)
    try:
        user = store.get_user("burst")
        assert user is not None and user.failures == 3 and user.locked_until is not None
        audited = [e.reason for e in store.query_audit(user="burst", limit=1000)]
        assert audited.count("bad_otp") == 3
        assert audited.count("locked") == 98
        assert "ok" not in audited
    finally:
        store.close()
