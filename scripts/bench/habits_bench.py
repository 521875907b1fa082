"""Micro-benchmark of SigninHabits.observe, the per-decision cost of the unusual sign-in
flag (not a test): `python scripts/bench/habits_bench.py`. Whole-decision figures with
and without it: `scripts/bench/engine [--no-unusual-signin]`."""

from __future__ import annotations

import timeit

from authd.core.habits import SigninHabits

h = SigninHabits()
users = [f"u{i}" for i in range(10000)]
for u in users:
    for k in range(6):
        h.observe(u, f"10.{k}.3.4", "vpn", 1767258000.0 + k * 60, 5)
n, i = 200000, 0


def usual() -> None:
    global i
    i += 1
    h.observe(users[i % 10000], "10.5.3.4", "vpn", 1767258000.0, 5)


def unusual() -> None:
    global i
    i += 1
    h.observe(users[i % 10000], f"172.16.{i % 250}.1", "vpn", 1767258000.0, 5)


base = min(timeit.repeat(lambda: None, number=n, repeat=5)) / n
for f in (usual, unusual):
    t = min(timeit.repeat(f, number=n, repeat=5)) / n
    print(f"{f.__name__}: {(t - base) * 1e6:.2f} us per call (10,000 users)")
