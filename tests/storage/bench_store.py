"""Micro-benchmark of the store calls one RADIUS decision makes (not collected by pytest).

    .venv/bin/python -m tests.storage.bench_store [URL] [N]

URL defaults to a SQLite file in a temp dir. Prints microseconds per call, then the
decisions/s of a decision's store work on 1 and 4 threads: as the engine does it now
(get_user_with_tokens + backup_codes_left + one commit_decision), and the old way
(get_user_with_tokens + accept_totp_step + record_attempt + append_audit, each its own
transaction). The whole engine is measured by scripts/bench/engine.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import count

from authd.auth.interfaces import AttemptRecord, DecisionWrite, UseTotpStep
from authd.core.model import AuditEvent, Token, TokenType, User
from authd.crypto import Keyring
from authd.storage.sql import SqlStore

NOW = 1_767_225_600.0


def _per_call_us(n: int, fn: Callable[[int], object]) -> float:
    for i in range(min(n, 200)):  # warm the compiled-statement cache and the pool
        fn(i)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="authd-bench-")
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/bench.db"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    store = SqlStore.open(url, Keyring.load_or_create(f"{tmp}/keys.json"), pool_size=4)
    users = [f"user{i:04d}" for i in range(8)]
    for u in users:
        store.add_user(User(name=u, groups=("vpn",), created_at=NOW))
        store.add_token(Token(serial=f"T-{u}", type=TokenType.TOTP, seed=b"x" * 20, user=u))
        store.add_token(Token(serial=f"H-{u}", type=TokenType.HOTP, seed=b"y" * 20, user=u))
    steps = count(10_000)
    event = AuditEvent(
        at=NOW,
        actor="radius:vpn",
        action="auth",
        result="accept",
        user="user0000",
        client="vpn",
        source="10.0.0.1",
        reason="ok",
    )

    def write(user: str, step: int) -> DecisionWrite:
        won = AttemptRecord(success=True, count_failure=False, audit=event)
        lost = AttemptRecord(success=False, count_failure=True, audit=event)
        use = UseTotpStep(f"T-{user}", step, 0)
        return DecisionWrite(user, NOW, "10.0.0.1", "vpn", 10**9, 60, won, use, lost)

    rows = {
        "get_user": lambda i: store.get_user(users[i % 8]),
        "list_tokens(user)": lambda i: store.list_tokens(users[i % 8]),
        "get_user_with_tokens": lambda i: store.get_user_with_tokens(users[i % 8]),
        "accept_totp_step": lambda i: store.accept_totp_step("T-user0000", next(steps), 0),
        "record_attempt": lambda i: store.record_attempt(
            users[i % 8], NOW, "10.0.0.1", "vpn", True
        ),
        "record_failure": lambda i: store.record_failure(users[i % 8], NOW, 10**9, 60),
        "append_audit": lambda i: store.append_audit(event),
        "backup_codes_left": lambda i: store.backup_codes_left(users[i % 8]),
        "commit_decision": lambda i: store.commit_decision(write(users[i % 8], next(steps))),
    }
    print(f"backend: {url.split(':')[0]}, {n} calls each")
    for name, fn in rows.items():
        print(f"  {name:24s} {_per_call_us(n, fn):8.1f} us/call")

    def decision(i: int) -> None:
        user = users[i % 8]
        store.get_user_with_tokens(user)
        store.backup_codes_left(user)
        assert store.commit_decision(write(user, next(steps))).won

    def old_decision(i: int) -> None:
        user = users[i % 8]
        _, toks = store.get_user_with_tokens(user)
        store.accept_totp_step(toks[-1].serial, next(steps), 0)
        store.record_attempt(user, NOW, "10.0.0.1", "vpn", True)
        store.append_audit(event)

    for label, fn, threads in [
        ("one commit", decision, 1),
        ("one commit", decision, 4),
        ("four commits", old_decision, 1),
        ("four commits", old_decision, 4),
    ]:
        per = n // threads
        t0 = time.perf_counter()
        workers = [
            threading.Thread(target=lambda k=per, f=fn: [f(i) for i in range(k)])
            for _ in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dt = time.perf_counter() - t0
        print(
            f"  {label:12s} {threads} thread(s): {per * threads / dt:8.0f} decisions/s "
            f"({dt / (per * threads) * 1e6:.0f} us each)"
        )
    store.close()


if __name__ == "__main__":
    main()
