"""Batching changes what decisions cost, never what they decide: for any sequence of
requests, the batched layer (`Batched`, reads in one snapshot, writes in one transaction,
first factors and challenge States paused outside) gives the same answers and leaves
the same rows (users, tokens, backup codes, audit) as deciding the same requests one
by one (`OneByOne`) in the order the batched run committed them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.auth.interfaces import AuthRequest
from authd.batching.batch import Batched, Item, OneByOne, Result
from authd.config.model import Config
from authd.core.backup_codes import hash_code
from authd.core.model import Algorithm, Token, TokenType, User
from authd.core.otp import hotp, totp
from authd.core.pin import hash_pin
from authd.crypto import Keyring
from authd.decision.attempt import Pending
from authd.decision.engine import Engine
from authd.storage.sql import SqlStore
from tests.fakes import FakeBackend, FakeDirectoryUser
from tests.world import NOW, PASSWORD, PIN, SEED, finish_paused, replace_cfg

BACKUP_CODES = ("abcde-fghjk-mnpqr", "23456-789ab-cdefg")
KINDS = ("code", "code", "wrong", "backup", "chain", "chain_bad", "challenge", "unknown")
_examples = itertools.count()


class Side:
    """One store and the engine on it; users are named per example so examples share
    the store without sharing state."""

    def __init__(self, url: str, keys: Path) -> None:
        self.keyring = Keyring.load_or_create(str(keys))
        self.store = SqlStore.open(url, self.keyring, pool_size=2)
        self.directory = FakeBackend("dir")
        config = replace_cfg(Config(), "otp.lockout.max_attempts", 3)
        self.engine = Engine(config, self.store, [self.directory], self.keyring.hash_key)

    def seed_users(self, prefix: str) -> list[str]:
        """u0, u1: TOTP; u2: HOTP; u3: TOTP with a PIN; each with two backup codes."""
        names = [f"{prefix}u{i}" for i in range(4)]
        for i, name in enumerate(names):
            self.store.add_user(User(name=name, source="dir"))
            self.directory.users[name] = FakeDirectoryUser(PASSWORD, ())
            kind = TokenType.HOTP if i == 2 else TokenType.TOTP
            token = Token(f"{name}-T", kind, SEED, name, Algorithm.SHA1)
            self.store.add_token(token)
            hashes = [hash_code(c, self.keyring.hash_key) for c in BACKUP_CODES]
            self.store.replace_backup_codes(name, hashes, NOW)
        self.store.set_pin_hash(names[3], hash_pin(PIN, self.keyring.hash_key, names[3]))
        return names

    def rows(self, names: list[str]) -> dict[str, Any]:
        """Everything the decisions of one example may have written."""
        out: dict[str, Any] = {}
        for name in names:
            user = self.store.get_user(name)
            token = self.store.get_token(f"{name}-T")
            assert user is not None and token is not None
            audit = sorted(
                (e.result, e.reason, e.detail, e.client) for e in self.store.query_audit(user=name)
            )
            out[name] = (
                user.failures,
                user.locked_until,
                user.last_success,
                user.last_attempt,
                token.last_step,
                token.counter,
                self.store.backup_codes_left(name),
                audit,
            )
        return out


@pytest.fixture(params=["sqlite", "postgresql"])
def sides(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    """The one-by-one reference and the batched side, on two stores of one kind."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / n / 'authd.db'}" for n in ("ref", "batched")]
    else:
        urls = [
            request.getfixturevalue("postgres_db_url"),
            request.getfixturevalue("other_postgres_db_url"),
        ]
    pair = (Side(urls[0], tmp_path / "ref.keys"), Side(urls[1], tmp_path / "batched.keys"))
    try:
        yield pair
    finally:
        for side in pair:
            side.store.close()


def _request(kind: str, name: str, index: int, variant: int) -> AuthRequest:
    """A request of `kind` for `name` (the user's index decides token and PIN)."""
    now = NOW + 0.25 * variant  # stays inside the step NOW is in
    code = hotp(SEED, variant % 3, 6) if index == 2 else totp(SEED, now, 30, 6)
    typed = PIN + code if index == 3 else code
    none: dict[str, Any] = {"first_factor": "none"}
    if kind == "code":
        args: dict[str, Any] = {"password": typed, **none}
    elif kind == "wrong":
        args = {"password": "000000" if index != 3 else PIN + "000000", **none}
    elif kind == "backup":
        args = {"password": (*BACKUP_CODES, "stuvw-xyz23-45678")[variant % 3], **none}
    elif kind == "chain":
        args = {"password": PASSWORD + typed}
    elif kind == "chain_bad":
        args = {"password": "not the password" + typed}
    elif kind == "challenge":
        args = {"password": PASSWORD, "otp_mode": "challenge"}
    else:
        return AuthRequest("nobody", "123456", "radius", "vpn", "192.0.2.7", **none)
    return AuthRequest(name, args.pop("password"), "radius", "vpn", "192.0.2.7", **args)


def _batched(decisions: Batched, items: list[Item]) -> tuple[list[Result], list[int]]:
    """As the scheduler: one pass over all items, the paused ones' blocking steps, and
    a second pass for those; the results, and the order their writes committed in."""
    first = decisions.decide_many(items)
    paused = [i for i, r in enumerate(first) if isinstance(r, Pending)]
    results = finish_paused(decisions, first)
    return results, [i for i in range(len(items)) if i not in paused] + paused


def _answer(result: Result) -> tuple[str, ...]:
    if isinstance(result, BaseException):
        return ("error", type(result).__name__)
    decision = result[0]
    return (decision.outcome.value, decision.reason.value, decision.user, decision.message)


plans = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 20)),
    min_size=1,
    max_size=24,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans)
def test_batched_decisions_equal_one_by_one(sides: tuple[Side, Side], plan: list[Any]) -> None:
    """Codes, replays, wrong codes up to the lockout, backup codes, chains with right
    and wrong passwords, challenges and unknown users, in any order: the batched run
    answers and writes exactly as one by one in its commit order."""
    reference, batched = sides
    prefix = f"e{next(_examples)}"
    names = reference.seed_users(prefix)
    assert batched.seed_users(prefix) == names
    items: list[Item] = [(_request(k, names[i], i, v), NOW + 0.25 * v) for k, i, v in plan]
    got, order = _batched(Batched(batched.engine, batched.store), items)
    expected: list[Result | None] = [None] * len(items)
    one_by_one = OneByOne(reference.engine)
    for i in order:
        [expected[i]] = one_by_one.decide_many([items[i]])  # type: ignore[list-item]
    assert [_answer(r) for r in got] == [_answer(r) for r in expected if r is not None]
    assert batched.rows(names) == reference.rows(names)
