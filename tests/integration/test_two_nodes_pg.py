"""Two `authd serve` nodes on one PostgreSQL database, slapd as the first factor,
radclient as the NAS and HTTP clients on /api/v1/validate, every burst sent to both
nodes at once.

Nothing but the database is shared between the nodes, so what one node used up,
locked or issued must hold on the other: a code, a challenge State and a backup code
are accepted once in all; parallel guesses stop at exactly `otp.lockout.max_attempts`
counted failures; and each request leaves exactly one audit row. Each test gets its own
database and pair of nodes. HOTP codes are counters, not time; the TOTP code is the one
of the current step, accepted within the default 30 s skew whatever step boundary the
burst crosses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from authd.core import backup_codes
from authd.core.model import AuditEvent, Token, TokenType
from authd.core.otp import hotp
from authd.crypto import Keyring
from authd.storage.sql import SqlStore
from tests.fixtures.radius import totp
from tests.fixtures.slapd import PASSWORDS, Slapd
from tests.integration.test_http_drain import in_flight
from tests.integration.test_identity_daemon import API_KEY, spellings
from tests.integration.test_identity_daemon import config_text as identity_config
from tests.integration.test_ldap_radius import SECRET, Daemon, need
from tests.integration.test_reload import validate
from tests.polling import wait_until
from tests.ports import free_ports

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
HOTP_SEED = b"two-nodes-hotp-seed-0123"
TOTP_SEED = b"two-nodes-totp-seed-4567"
INLINE = "127.0.0.1"  # client `nas`: password followed by the code
CHALLENGE = "127.0.0.2"  # client `chal`: otp_mode challenge
HOLD_LIMIT = 10.0  # seconds a burst may keep the directory stopped (see `burst`)
REPLY_WAIT = 20  # seconds radclient waits for each reply: beyond the hold
BURST_TIMEOUT = 30.0  # seconds for a whole burst's answers
FRONTENDS = ("radius", "http")


def node_config(
    slapd: Slapd, url: str, keys: Path, ports: tuple[int, int], hash_chain: bool
) -> str:
    """The identity tests' node (slapd as the first factor, RADIUS client `nas` on
    127.0.0.1, HTTP key `appliance`) on the shared database and key file, locking after
    MAX_ATTEMPTS failures until unlocked, with a challenge client on 127.0.0.2, and
    directory timeouts that outlast a burst held back (see `burst`)."""
    config = yaml.safe_load(identity_config(slapd, *ports))
    config["store"] = {"url": url, "timeout": "10s"}
    config["keys"] = {"file": str(keys)}
    config["otp"] = {"lockout": {"max_attempts": MAX_ATTEMPTS, "auto_unlock_after": "never"}}
    (directory,) = config["primary"]["backends"]
    directory.update(connect_timeout="10s", operation_timeout="10s", request_timeout="15s")
    clients = config["radius"]["clients"]
    clients.append({**clients[0], "name": "chal", "address": f"{CHALLENGE}/32"})
    clients[-1]["otp_mode"] = "challenge"
    config["audit"] = {"hash_chain": hash_chain}
    return str(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Node:
    daemon: Daemon
    radius_port: int
    http_port: int


def start_node(slapd: Slapd, url: str, keys: Path, folder: Path, hash_chain: bool) -> Node:
    """Write the node's config and secrets in `folder` and start it (not waiting)."""
    folder.mkdir()
    secret = folder / "ldap-bind.secret"
    secret.write_text(slapd.service_password + "\n")
    secret.chmod(0o600)
    radius_port, http_port = free_ports(2)
    config = folder / "authd.yaml"
    ports = radius_port, http_port
    config.write_text(node_config(slapd, url, keys, ports, hash_chain))
    return Node(Daemon(config), radius_port, http_port)


@dataclass
class Pair:
    """Two running nodes, and the shared store opened beside them to seed and check."""

    a: Node
    b: Node
    store: SqlStore
    hash_key: bytes
    slapd: Slapd
    hash_chain: bool

    def audit(self, user: str | None = None) -> list[AuditEvent]:
        """The decisions' audit rows (not the daemons' own, such as config.load)."""
        events = self.store.query_audit(user=user, limit=100_000)
        return [e for e in events if e.action == "auth"]

    def reasons(self, user: str) -> Counter[str]:
        return Counter(e.reason for e in self.audit(user))

    def backup_codes(self, user: str, count: int) -> list[str]:
        """A fresh set of backup codes for `user`, as `authctl backup-codes generate`."""
        codes = backup_codes.generate_codes(count)
        hashes = [backup_codes.hash_code(c, self.hash_key) for c in codes]
        self.store.replace_backup_codes(user, hashes, 0.0)
        return codes


@pytest.fixture
def pair(
    request: pytest.FixtureRequest, slapd: Slapd, postgres_db_url: str, tmp_path: Path
) -> Iterator[Pair]:
    """alice (HOTP) and bob (TOTP), directory users with tokens in a fresh database, and
    two nodes on it sharing the key file; with the audit hash chain when the test's
    parameter says so."""
    hash_chain = bool(getattr(request, "param", False))
    keys = tmp_path / "keys.json"
    keyring = Keyring.load_or_create(str(keys))
    store = SqlStore.open(postgres_db_url, keyring, pool_size=2, audit_chain=hash_chain)
    started: list[Node] = []
    try:
        for user, kind, seed in (
            ("alice", TokenType.HOTP, HOTP_SEED),
            ("bob", TokenType.TOTP, TOTP_SEED),
        ):
            store.ensure_user(user, "corp-ldap", 0.0)
            store.add_token(Token(serial=f"PG-{user}", type=kind, seed=seed, user=user))
        for name in "ab":
            started.append(start_node(slapd, postgres_db_url, keys, tmp_path / name, hash_chain))
        for node in started:
            node.daemon.wait_ready()
        yield Pair(started[0], started[1], store, keyring.hash_key, slapd, hash_chain)
    finally:
        for node in started:
            node.daemon.stop()
        store.close()
    for node in started:
        assert node.daemon.proc.returncode == 0, node.daemon.output
        for secret in (*PASSWORDS.values(), slapd.service_password, SECRET, API_KEY):
            assert secret not in node.daemon.output


# ------------------------------------------------------------------ sending at once
@dataclass(frozen=True)
class Radius:
    """One Access-Request: to which node, from which client, what the user typed."""

    node: Node
    user: str
    password: str
    source: str = INLINE
    state: str | None = None

    @property
    def client(self) -> str:
        return "nas" if self.source == INLINE else "chal"

    def lines(self) -> str:
        extra = [f"State = {self.state}"] if self.state else []
        return "\n".join(
            [
                f'User-Name = "{self.user}"',
                f'User-Password = "{self.password}"',
                *extra,
                f"Packet-Src-IP-Address = {self.source}",
                "Message-Authenticator = 0x00",
            ]
        )


@dataclass(frozen=True)
class Http:
    """One POST /api/v1/validate to a node; fields left None are not sent."""

    node: Node
    user: str
    password: str | None
    otp: str | None = None
    state: str | None = None
    client = "appliance"  # the API key's name

    def answer(self) -> dict[str, str]:
        fields = {
            "user": self.user,
            "password": self.password,
            "otp": self.otp,
            "state": self.state,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        status, answer = validate(self.node.http_port, API_KEY, body)
        assert status == 200, (status, answer)
        return answer


RESULTS = {"Access-Accept": "accept", "Access-Reject": "reject", "Access-Challenge": "challenge"}
REPLY = re.compile(r"Received (Access-\w+) Id (\d+)[^\n]*\n((?:\t[^\n]*\n)*)")
STATE = re.compile(r"\tState = (0x[0-9a-f]+)")


def _radclient(port: int, packets: list[Radius], infile: Path) -> subprocess.Popen[str]:
    """radclient with all of `packets` in flight together (one try each)."""
    prog = need("radclient", "freeradius-utils")
    infile.write_text("\n\n".join(p.lines() for p in packets) + "\n")
    return subprocess.Popen(
        [prog, "-x", "-r", "1", "-t", str(REPLY_WAIT), "-p", str(len(packets)), "-f", str(infile)]
        + [f"127.0.0.1:{port}", "auth", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _answers(out: str, count: int) -> list[tuple[str, str | None]]:
    """The result and State of each packet, in file order: radclient sends them in that
    order and names each reply by the Identifier it sent, its attributes below it."""
    sent = re.findall(r"Sent Access-Request Id (\d+)", out)
    got = {
        i: (RESULTS[code], state.group(1) if (state := re.search(STATE, attrs)) else None)
        for code, i, attrs in re.findall(REPLY, out)
    }
    assert len(sent) == count and set(got) == set(sent), out
    return [got[i] for i in sent]


def burst(requests: list[Radius | Http], tmp: Path, held: Slapd | None = None) -> list[str]:
    """The result of each request ("accept", "reject" or "challenge"), sent as
    `answered` sends them."""
    return [result for result, _ in answered(requests, tmp, held)]


def answered(
    requests: list[Radius | Http], tmp: Path, held: Slapd | None = None
) -> list[tuple[str, str | None]]:
    """Send every request at once: one radclient per node and client address with all of
    its packets in flight together, and the HTTP requests from threads meanwhile. The
    result of each request and the challenge State it got (or None), in order; each
    request must be answered.

    held: the directory, stopped (SIGSTOP) until every request is in flight on its node
    (so every request must need the directory): they wait in their first factor, having
    read the user, and all reach their writes together, the closest race two nodes can
    run."""
    groups: dict[tuple[int, str], list[tuple[int, Radius]]] = {}
    web: list[tuple[int, Http]] = []
    for n, r in enumerate(requests):
        if isinstance(r, Radius):
            groups.setdefault((r.node.radius_port, r.source), []).append((n, r))
        else:
            web.append((n, r))
    sent_to = Counter(r.node.http_port for r in requests)
    if held is not None:
        os.kill(held.process.pid, signal.SIGSTOP)
    try:
        procs = [
            (_radclient(port, [r for _, r in group], tmp / f"{port}-{source}.txt"), group)
            for (port, source), group in groups.items()
        ]
        with ThreadPoolExecutor(max_workers=len(web) or 1) as pool:
            futures = [(n, pool.submit(h.answer)) for n, h in web]
            if held is not None:
                for port, count in sent_to.items():
                    wait_until(
                        lambda port=port, count=count: in_flight(port, FRONTENDS) == count,
                        HOLD_LIMIT,
                        f"the {count} requests to one node were never in flight together",
                    )
                os.kill(held.process.pid, signal.SIGCONT)
            results: dict[int, tuple[str, str | None]] = {}
            for n, future in futures:
                reply = future.result(timeout=BURST_TIMEOUT)
                results[n] = (reply["result"], reply.get("state"))
    finally:
        if held is not None:
            os.kill(held.process.pid, signal.SIGCONT)
    for proc, group in procs:
        out = proc.communicate(timeout=BURST_TIMEOUT)[0]
        results.update(zip((n for n, _ in group), _answers(out, len(group)), strict=True))
    return [results[n] for n in range(len(requests))]


def challenge(node: Node, user: str, tmp: Path) -> str:
    """Password alone from the challenge client: the State of the Access-Challenge."""
    ((result, state),) = answered([Radius(node, user, PASSWORDS[user], CHALLENGE)], tmp)
    assert result == "challenge" and state is not None
    return state


def accepts(answers: list[str]) -> int:
    return answers.count("accept")


def wrong_code(*taken: str) -> str:
    """Six digits that are none of `taken` (the codes a token would accept now)."""
    return next(c for c in ("000000", "111111", "222222") if c not in taken)


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("user", ["alice", "bob"], ids=["hotp", "totp"])
def test_a_code_sent_to_both_nodes_at_once_is_accepted_once(
    pair: Pair, tmp_path: Path, user: str
) -> None:
    """One right code, 24 copies in flight together (RADIUS and HTTP, both nodes, the
    user's name in every spelling a gateway may send): one accept, 23 replays, audited
    as the user, no failure counted (a replay is no guess), no stray user rows. Then a
    later code is accepted on node B, and after it an older one, unused and within the
    window, is refused on node A (RFC 4226 §7.2, RFC 6238 §5.2)."""
    now = time.time()
    codes = {  # (the burst's code, a later one, one older than that)
        "alice": (hotp(HOTP_SEED, 0, 6), hotp(HOTP_SEED, 5, 6), hotp(HOTP_SEED, 3, 6)),
        "bob": tuple(totp(now + d, TOTP_SEED) for d in (0, 30, -30)),
    }
    code, later, older = codes[user]
    names = spellings(user)
    requests: list[Radius | Http] = []
    for node in (pair.a, pair.b):
        requests += [Radius(node, typed, PASSWORDS[user] + code) for typed in names[:8]]
        requests += [Http(node, typed, PASSWORDS[user], code) for typed in names[4:]]
    answers = burst(requests, tmp_path, held=pair.slapd)
    assert accepts(answers) == 1, answers
    assert pair.reasons(user) == {"ok": 1, "replay": len(requests) - 1}
    stored = pair.store.get_user(user)
    assert stored is not None and (stored.failures, stored.locked_until) == (0, None)
    assert sorted(o.user.name for o in pair.store.list_users()) == ["alice", "bob"]

    assert burst([Radius(pair.b, user, PASSWORDS[user] + later)], tmp_path) == ["accept"]
    assert burst([Http(pair.a, user, PASSWORDS[user], older)], tmp_path) == ["reject"]


def test_parallel_guesses_on_both_nodes_lock_after_exactly_max_attempts(
    pair: Pair, tmp_path: Path
) -> None:
    """40 wrong codes with alice's password, spread over both nodes, both front-ends and
    the spellings of her name at once: exactly 3 counted (failures column and audit),
    the other 37 refused as locked; then her right code, on either node and as the
    answer to a challenge issued before the lock, is refused too and stays unused."""
    state = challenge(pair.a, "alice", tmp_path)
    wrong = wrong_code(*(hotp(HOTP_SEED, c, 6) for c in range(12)))
    names = spellings("alice") * 2
    requests: list[Radius | Http] = []
    for node in (pair.a, pair.b):
        requests += [Radius(node, typed, PASSWORDS["alice"] + wrong) for typed in names[:15]]
        requests += [Http(node, typed, PASSWORDS["alice"], wrong) for typed in names[3:8]]
    assert accepts(burst(requests, tmp_path, held=pair.slapd)) == 0
    locked = pair.store.get_user("alice")
    assert locked is not None and locked.failures == MAX_ATTEMPTS
    assert locked.locked_until is not None
    issued = {"challenge_issued": 1}
    assert pair.reasons("alice") == {**issued, "bad_otp": MAX_ATTEMPTS, "locked": 40 - 3}

    right = hotp(HOTP_SEED, 0, 6)
    after: list[Radius | Http] = [Radius(pair.b, "alice", right, CHALLENGE, state)]
    for node in (pair.a, pair.b):
        after += [Radius(node, "alice", PASSWORDS["alice"] + right)]
        after += [Http(node, "alice", PASSWORDS["alice"], right)]
    assert accepts(burst(after, tmp_path)) == 0
    assert pair.reasons("alice") == {**issued, "bad_otp": MAX_ATTEMPTS, "locked": 45 - 3}
    token = pair.store.get_token("PG-alice")
    assert token is not None and token.counter == 0
    still = pair.store.get_user("alice")
    assert still is not None and still.failures == MAX_ATTEMPTS
    # Unlocked in the store (as `authctl user unlock` does): no node holds the lock in
    # memory; her code is accepted once, on either node, and the count is reset.
    assert pair.store.unlock_user("alice")
    once = [
        Radius(pair.b, "alice", PASSWORDS["alice"] + right),
        Http(pair.a, "alice", PASSWORDS["alice"], right),
    ]
    assert sorted(burst(once, tmp_path)) == ["accept", "reject"]
    unlocked = pair.store.get_user("alice")
    assert unlocked is not None and (unlocked.failures, unlocked.locked_until) == (0, None)


def test_a_challenge_from_one_node_is_answered_on_the_other_once(
    pair: Pair, tmp_path: Path
) -> None:
    """otp_mode challenge: the State node A issued, answered on node B with the code,
    is an accept; the same State again on A (with the next code) is refused. A second
    State answered 8 times at once on both nodes, each with a different valid code:
    one accept, the State taken once. The same over HTTP: `state` from A, `otp` on B."""
    state = challenge(pair.a, "alice", tmp_path)
    code = hotp(HOTP_SEED, 0, 6)
    answer = burst([Radius(pair.b, "alice", code, CHALLENGE, state)], tmp_path)
    assert answer == ["accept"]
    again = burst([Radius(pair.a, "alice", hotp(HOTP_SEED, 1, 6), CHALLENGE, state)], tmp_path)
    assert again == ["reject"]
    assert pair.reasons("alice") == {"challenge_issued": 1, "ok": 1, "bad_state": 1}

    state = challenge(pair.b, "alice", tmp_path)
    answers = burst(
        [
            Radius((pair.a, pair.b)[c % 2], "alice", hotp(HOTP_SEED, c, 6), CHALLENGE, state)
            for c in range(1, 9)
        ],
        tmp_path,
    )
    assert accepts(answers) == 1, answers
    assert pair.reasons("alice") == {"challenge_issued": 2, "ok": 2, "bad_state": 1 + 7}

    issued = Http(pair.a, "bob", PASSWORDS["bob"]).answer()
    assert issued["result"] == "challenge", issued
    now = time.time()
    answer = burst([Http(pair.b, "bob", None, totp(now, TOTP_SEED), issued["state"])], tmp_path)
    assert answer == ["accept"]
    again = Http(pair.a, "bob", None, totp(now + 30, TOTP_SEED), issued["state"])
    assert burst([again], tmp_path) == ["reject"]
    assert pair.reasons("bob") == {"challenge_issued": 1, "ok": 1, "bad_state": 1}


def test_a_backup_code_used_on_both_nodes_at_once_is_accepted_once(
    pair: Pair, tmp_path: Path
) -> None:
    """One backup code, 8 copies at once over both nodes: one accept. A used backup code
    is no replay of a token's code, so the losers count as failures: 3 counted, then
    locked; the set's other codes are left."""
    code, *_ = pair.backup_codes("alice", 5)
    requests: list[Radius | Http] = []
    for node in (pair.a, pair.b):
        requests += [Radius(node, "alice", PASSWORDS["alice"] + code) for _ in range(3)]
        requests += [Http(node, "alice", PASSWORDS["alice"], code)]
    answers = burst(requests, tmp_path, held=pair.slapd)
    assert accepts(answers) == 1, answers
    assert pair.reasons("alice") == {
        "ok_backup_code": 1,
        "bad_otp": MAX_ATTEMPTS,
        "locked": len(requests) - 1 - MAX_ATTEMPTS,
    }
    assert pair.store.backup_codes_left("alice") == 4


@pytest.mark.parametrize("pair", [False, True], ids=["plain", "hash_chain"], indirect=True)
def test_every_request_on_either_node_is_audited_once(pair: Pair, tmp_path: Path) -> None:
    """A mixed burst on both nodes and front-ends (fresh and replayed codes, wrong
    passwords, an unknown user, challenges): exactly one `auth` audit row per request,
    with the client and result the requester saw; with audit.hash_chain, both nodes
    appending at once leave one unbroken chain (`authctl audit verify`)."""
    requests: list[Radius | Http] = []
    for i, node in enumerate((pair.a, pair.b)):
        requests += [
            Radius(node, "alice", PASSWORDS["alice"] + hotp(HOTP_SEED, i, 6)),
            Radius(node, "alice", PASSWORDS["alice"] + hotp(HOTP_SEED, i, 6)),
            Radius(node, "bob", "not-the-password" + totp(time.time(), TOTP_SEED)),
            Radius(node, "mallory", "whatever123456"),
            Radius(node, "bob", PASSWORDS["bob"], CHALLENGE),
            Http(node, "alice", PASSWORDS["alice"], hotp(HOTP_SEED, 5 + i, 6)),
            Http(node, "bob", PASSWORDS["bob"]),
            Http(node, "mallory", "whatever", "123456"),
        ]
    answers = burst(requests, tmp_path, held=pair.slapd)
    rows = pair.audit()
    assert len(rows) == len(requests)
    sent = Counter((r.client, a) for r, a in zip(requests, answers, strict=True))
    assert Counter((e.client, e.result) for e in rows) == sent
    if pair.hash_chain:
        verdict = pair.store.verify_audit()
        assert verdict.ok and verdict.checked >= len(requests), verdict
