"""The engine flags an unusual successful sign-in in its audit row (and counts it), on
the single and the batched path; rejects are never looked at; nothing is blocked; off
with audit.unusual_signin.enabled: false."""

from __future__ import annotations

import dataclasses

from authd.auth.interfaces import Outcome
from authd.core.habits import SigninHabits
from authd.core.model import AuditEvent
from authd.decision.engine import Engine
from tests.world import PASSWORD, World, decide_all, decisions_for


def _auth_rows(world: World) -> list[AuditEvent]:
    rows = world.store.query_audit(user="alice", limit=100)
    return [e for e in reversed(rows) if e.action == "auth"]


def _sign_in(world: World, engine: Engine, source: str, client: str, at: float) -> Outcome:
    token = world.store.list_tokens("alice")[0]
    req = dataclasses.replace(
        world.request(PASSWORD + world.code(token, at)), source=source, client=client
    )
    (result,) = decide_all(decisions_for(engine), [(req, at)])
    assert isinstance(result, tuple)
    return result[0].outcome


def _setup(world: World) -> tuple[Engine, list[str]]:
    world.user()
    world.token()
    world.set("audit.unusual_signin.learn", 2)
    counted: list[str] = []
    habits = SigninHabits(on_flag=counted.append)
    engine = Engine(world.config, world.store, [world.directory], world.hash_key, habits=habits)
    return engine, counted


def test_unusual_success_is_flagged_not_blocked(fake_world: World) -> None:
    """After two sign-ins from 192.0.2.x on vpn, one from another network on another
    client is accepted and its audit row says why it is unusual; a reject is not."""
    world = fake_world
    engine, counted = _setup(world)
    for i in range(2):
        assert _sign_in(world, engine, "192.0.2.7", "vpn", world.now + 30 * i) is Outcome.ACCEPT
    wrong = dataclasses.replace(world.request(PASSWORD + "000000"), source="203.0.113.9")
    assert engine.decide(wrong, world.now + 60).outcome is Outcome.REJECT
    assert _sign_in(world, engine, "203.0.113.9", "wifi", world.now + 90) is Outcome.ACCEPT
    rows = _auth_rows(world)
    assert [r.result for r in rows] == ["accept", "accept", "reject", "accept"]
    assert "unusual" not in " ".join(r.detail for r in rows[:3])
    assert rows[3].detail.endswith("unusual=network,client")
    assert counted == ["network", "client"]


def test_batched_decisions_are_flagged_too(sqlite_world: World) -> None:
    """Batched decisions (SQLite) build the same audit rows: the flag is there too."""
    world = sqlite_world
    engine, counted = _setup(world)
    for i in range(2):
        _sign_in(world, engine, "192.0.2.7", "vpn", world.now + 30 * i)
    assert _sign_in(world, engine, "2001:db8::1", "vpn", world.now + 60) is Outcome.ACCEPT
    assert _auth_rows(world)[-1].detail.endswith("unusual=network")
    assert counted == ["network"]


def test_disabled_flags_nothing(fake_world: World) -> None:
    """audit.unusual_signin.enabled: false: the engine never asks."""
    world = fake_world
    engine, counted = _setup(world)
    world.set("audit.unusual_signin.enabled", False)
    engine.config = world.config
    for i, source in enumerate(["192.0.2.7", "192.0.2.8", "203.0.113.9"]):
        _sign_in(world, engine, source, "vpn", world.now + 30 * i)
    assert counted == [] and all("unusual" not in r.detail for r in _auth_rows(world))

