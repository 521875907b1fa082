"""A small world for decision tests: a store, a counting directory, a config, a fixed now.

`world` runs on the hand-written FakeStore and on the real SqlStore (SQLite and
PostgreSQL), so the engine's promises hold against the store that ships. The fixtures
are made available to a test directory by its conftest.py importing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason, Store
from authd.batching.batch import Batched, Decisions, Item, OneByOne, Result
from authd.config.model import Config
from authd.core.backup_codes import generate_codes, hash_code
from authd.core.model import Algorithm, Token, TokenType, User
from authd.core.otp import hotp, totp
from authd.core.pin import hash_pin
from authd.decision.attempt import Pending
from authd.decision.engine import Engine
from authd.decision.plan import DecisionStats
from tests.fakes import FakeBackend, FakeDirectoryUser, FakeStore, WrappedStore

# 2026-01-01T00:00:07Z: seven seconds into a TOTP step, away from its edges.
NOW = 1_767_225_607.0
HASH_KEY = b"k" * 32
SEED = b"12345678901234567890"  # RFC 4226 Appendix D test seed
PASSWORD = "correct horse 42"
PIN = "3917"
STORE_KINDS = ["fake", "sqlite", "postgresql"]


def replace_cfg(config: Config, path: str, value: Any) -> Config:
    """`config` with the dotted `path` set to `value` (frozen dataclasses all the way)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: replace_cfg(getattr(config, head), rest, value)})


@dataclasses.dataclass
class World:
    store: Store
    hash_key: bytes
    directory: FakeBackend
    config: Config = dataclasses.field(default_factory=Config)
    now: float = NOW
    serials: int = 0
    last_stats: DecisionStats | None = None

    def set(self, path: str, value: Any) -> None:
        self.config = replace_cfg(self.config, path, value)

    def engine(self) -> Engine:
        return Engine(self.config, self.store, [self.directory], self.hash_key)

    def decisions(self) -> Decisions:
        """The engine as the daemon runs it on this store (batched on SqlStore)."""
        return decisions_for(self.engine())

    def user(self, name: str = "alice", groups: tuple[str, ...] = ("staff",), **kw: Any) -> str:
        """A directory user known to the store and to the fake directory."""
        self.store.add_user(User(name=name, source=self.directory.name, groups=groups, **kw))
        self.directory.users[name] = FakeDirectoryUser(PASSWORD, groups)
        return name

    def token(
        self,
        user: str = "alice",
        *,
        type: TokenType = TokenType.TOTP,
        digits: int = 6,
        seed: bytes = SEED,
        **kw: Any,
    ) -> Token:
        self.serials += 1
        token = Token(
            serial=f"T{self.serials:04d}",
            type=type,
            seed=seed,
            user=user,
            digits=digits,
            algorithm=Algorithm.SHA1,
            **kw,
        )
        self.store.add_token(token)
        return token

    def users_with_tokens(self, count: int) -> dict[str, Token]:
        """`count` directory users u00, u01, ..., each with one TOTP token."""
        return {u: self.token(u) for u in (self.user(f"u{i:02d}") for i in range(count))}

    def code(self, token: Token, at: float | None = None, counter: int | None = None) -> str:
        if token.type == TokenType.HOTP:
            return hotp(token.seed, token.counter if counter is None else counter, token.digits)
        return totp(token.seed, self.now if at is None else at, token.period, token.digits)

    def pin(self, user: str = "alice", pin: str = PIN) -> str:
        self.store.set_pin_hash(user, hash_pin(pin, self.hash_key, user))
        return pin

    def backup_codes(self, user: str = "alice", count: int = 3) -> list[str]:
        codes = generate_codes(count)
        self.store.replace_backup_codes(
            user, [hash_code(c, self.hash_key) for c in codes], self.now
        )
        return codes

    def request(
        self,
        password: str,
        *,
        user: str = "alice",
        otp: str | None = None,
        state: bytes | None = None,
        mode: str = "inline",
        first_factor: str = "chain",
        client: str = "vpn",
        frontend: str = "radius",
        realms: frozenset[str] = frozenset(),
    ) -> AuthRequest:
        return AuthRequest(
            user=user,
            password=password,
            frontend=frontend,
            client=client,
            source="192.0.2.7",
            otp=otp,
            state=state,
            first_factor=first_factor,
            otp_mode=mode,
            realms=realms,
        )

    def decide(self, password: str, *, at: float | None = None, **kw: Any) -> Decision:
        decision, self.last_stats = self.engine().decide_with_stats(
            self.request(password, **kw), self.now if at is None else at
        )
        return decision

    def stored_user(self, name: str = "alice") -> User:
        user = self.store.get_user(name)
        assert user is not None
        return user

    @property
    def binds(self) -> int:
        """First-factor checks the directory saw (each would be an LDAP bind)."""
        return len(self.directory.authenticate_calls)


def decisions_for(engine: Engine) -> Decisions:
    """As authd.app.decisions_for: batches on the SQL store, one by one elsewhere."""
    from authd.storage.sql import SqlStore

    store = engine.store
    sql = store.wrapped if isinstance(store, WrappedStore) else store
    return Batched(engine, store) if isinstance(sql, SqlStore) else OneByOne(engine)


def finish_paused(decisions: Decisions, first: list[Result | Pending]) -> list[Result]:
    """What the scheduler does with the paused decisions of one `decide_many`: their
    blocking steps run here, in order, then they finish together in one more call; the
    results in `first`'s order."""
    paused = [r for r in first if isinstance(r, Pending)]
    for step in paused:
        step.run_outside()
    finished = iter(decisions.decide_many(paused))
    results: list[Result] = []
    for r in first:
        final = next(finished) if isinstance(r, Pending) else r
        assert not isinstance(final, Pending)  # a finished one is never paused again
        results.append(final)
    return results


def decide_all(decisions: Decisions, items: list[Item]) -> list[Result]:
    """Every item decided to the end, as the scheduler would in one thread."""
    return finish_paused(decisions, decisions.decide_many(items))


def decide_paused(engine: Engine, reqs: list[AuthRequest]) -> tuple[list[Result], int]:
    """`decide_all` for `reqs` at NOW on the engine's store, and how many paused."""
    decisions = decisions_for(engine)
    first = decisions.decide_many([(r, NOW) for r in reqs])
    return finish_paused(decisions, first), sum(isinstance(r, Pending) for r in first)


def outcomes(results: list[Result]) -> list[tuple[Outcome, Reason] | str]:
    return [
        type(r).__name__ if isinstance(r, BaseException) else (r[0].outcome, r[0].reason)
        for r in results
    ]


@contextlib.contextmanager
def _open_real(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Any, bytes]]:
    from authd.crypto import Keyring
    from authd.storage.sql import SqlStore

    keyring = Keyring.load_or_create(str(tmp_path / "keys" / "keys.json"))
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'authd.db'}"
    else:
        url = str(request.getfixturevalue("postgres_db_url"))
    store = SqlStore.open(url, keyring, pool_size=2)
    try:
        yield store, keyring.hash_key
    finally:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A World on each store kind; the fake directory is called `dir`."""
    if request.param == "fake":
        yield World(FakeStore(), HASH_KEY, FakeBackend("dir"))
        return
    with _open_real(request.param, request, tmp_path) as (store, hash_key):
        yield World(store, hash_key, FakeBackend("dir"))


@pytest.fixture
def sqlite_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A World on SQLite alone (a batching store)."""
    with _open_real("sqlite", request, tmp_path) as (store, hash_key):
        yield World(store, hash_key, FakeBackend("dir"))


@pytest.fixture(params=["fake", "sqlite"])
def paused_or_not_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A store whose requests are decided whole, one by one (fake, as tokens held in a
    directory) and one on which they are batched and first factors paused (SQLite)."""
    if request.param == "fake":
        yield World(FakeStore(), HASH_KEY, FakeBackend("dir"))
        return
    with _open_real("sqlite", request, tmp_path) as (store, hash_key):
        yield World(store, hash_key, FakeBackend("dir"))


@pytest.fixture
def fake_world() -> World:
    """A World on the FakeStore only, for rules that do not depend on the store."""
    return World(FakeStore(), HASH_KEY, FakeBackend("dir"))
