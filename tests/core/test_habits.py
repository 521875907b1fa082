"""Unusual sign-in habits: what is flagged, after how many sign-ins, and that the state
per user and in all stays bounded."""

from __future__ import annotations

import gc

from authd.core.habits import MAX_CLIENTS, MAX_NETWORKS, SigninHabits, network_of

# 2026-01-01T09:00:00Z
NINE = 1_767_258_000.0
HOUR = 3600.0


def _learned(habits: SigninHabits, user: str = "alice", learn: int = 3) -> None:
    for i in range(learn):
        assert habits.observe(user, "192.0.2.7", "vpn", NINE + i * 60, learn) == ()


def test_networks_are_24_and_64_prefixes() -> None:
    """IPv4 /24, IPv6 /64, IPv4-mapped IPv6 as IPv4; no address gives no network."""
    assert network_of("192.0.2.7") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert network_of("::ffff:192.0.2.7") == "192.0.2.0/24"
    assert network_of("") == network_of("not an ip") == ""


def test_nothing_is_flagged_while_learning() -> None:
    """The first `learn` successes teach, whatever they look like."""
    habits = SigninHabits()
    assert habits.observe("bob", "198.51.100.1", "wifi", NINE, 2) == ()
    assert habits.observe("bob", "203.0.113.1", "vpn", NINE + 12 * HOUR, 2) == ()
    assert habits.observe("bob", "192.0.2.1", "ssh", NINE + 6 * HOUR, 2) != ()


def test_each_new_signal_is_flagged_then_learned() -> None:
    """A new network, a new client, an hour far from every earlier one: each flagged,
    counted, and usual the next time; a neighbouring hour or address is not flagged."""
    counted: list[str] = []
    habits = SigninHabits(on_flag=counted.append)
    _learned(habits)
    assert habits.observe("alice", "192.0.2.200", "vpn", NINE + HOUR, 3) == ()  # same /24, 10:00
    assert habits.observe("alice", "198.51.100.9", "vpn", NINE, 3) == ("network",)
    assert habits.observe("alice", "198.51.100.10", "vpn", NINE, 3) == ()
    assert habits.observe("alice", "192.0.2.7", "wifi", NINE, 3) == ("client",)
    assert habits.observe("alice", "192.0.2.7", "vpn", NINE + 12 * HOUR, 3) == ("hour",)
    assert habits.observe("alice", "203.0.113.5", "ssh", NINE - 5 * HOUR, 3) == (
        "network",
        "client",
        "hour",
    )
    assert counted == ["network", "client", "hour", "network", "client", "hour"]


def test_state_is_bounded_per_user_and_in_all() -> None:
    """At most MAX_NETWORKS networks and MAX_CLIENTS clients per user (the oldest go);
    at most `max_users` users (the least recently seen go, and learn again)."""
    habits = SigninHabits(max_users=2)
    _learned(habits)
    for i in range(MAX_NETWORKS + 1):
        habits.observe("alice", f"10.0.{i}.1", "vpn", NINE, 3)
    assert habits.observe("alice", "10.0.0.1", "vpn", NINE, 3) == ("network",)  # forgotten
    for i in range(MAX_CLIENTS + 1):
        habits.observe("alice", "10.0.0.1", f"c{i}", NINE, 3)
    assert habits.observe("alice", "10.0.0.1", "c0", NINE, 3) == ("client",)
    _learned(habits, "bob")
    _learned(habits, "carol")  # alice is the least recently seen: dropped
    assert len(habits) == 2
    assert habits.observe("alice", "203.0.113.5", "ssh", NINE, 3) == ()  # learning again


def test_habits_leave_the_cyclic_collector_nothing_to_walk() -> None:
    """Per-user habits are kept in a form the cyclic garbage collector stops tracking:
    10,000 users with networks, clients and hours add no tracked objects, so a full
    collection (which pauses every thread) costs the same with a large user base."""
    gc.collect()
    before = len(gc.get_objects())
    habits = SigninHabits()
    for i in range(10_000):
        for k in range(3):
            habits.observe(f"u{i}", f"10.{k}.{i % 250}.1", f"client{k}", NINE + k * HOUR, 2)
    habits.learn("u0", "192.0.2.1", "vpn", NINE)
    gc.collect()  # untracks the inner tuples of networks and clients,
    gc.collect()  # then the tuples holding them
    assert len(habits) == 10_000
    assert len(gc.get_objects()) - before < 50
