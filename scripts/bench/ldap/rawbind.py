"""Raw ldap3 simple binds: the baseline that scripts/bench/radius --ldap holds authd to.

One process, `threads` threads, each with its own persistent ldap3 SYNC connection
(opened before the clock starts), binding as the given users with their passwords in
turn: the least work a Python client can do per password check (no search, no pool, no
bookkeeping). Printable-ASCII passwords are handed to ldap3 as bytes, which skips its
SASLprep (an identity on them): the same octets on the wire, as authd sends them. The
parent runs one or more of these processes at once (one GIL each) and adds them up.
Every bind must succeed, or the parent discards the run.

Usage: python scripts/bench/ldap/rawbind.py URL CREDS_JSON THREADS COUNT START_AT OFFSET [RATE]
CREDS_JSON: a file holding [[dn, password], ...]; START_AT: time.time() to start at;
OFFSET: where in the list this process starts (so processes bind different users);
RATE: binds/s this process offers (open loop: bind i is due at START_AT + i/RATE, and its
latency counts from then; 0 or absent: each thread binds as fast as it can).
Prints one JSON line: count, failures, late (paced binds started > 10 ms after their due
time: every thread was still busy), t0, t1 (time.time()), cpu_s, latencies_ms and done_at
(time.time() of each completion).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import ldap3


def main(argv: list[str]) -> int:
    url, creds_file, threads, count, start_at, offset = (
        argv[0],
        argv[1],
        int(argv[2]),
        int(argv[3]),
        float(argv[4]),
        int(argv[5]),
    )
    rate = float(argv[6]) if len(argv) > 6 else 0.0
    with open(creds_file) as f:
        creds: list[tuple[str, str | bytes]] = [
            (dn, pw.encode("ascii") if pw.isascii() and pw.isprintable() else pw)
            for dn, pw in json.load(f)
        ]
    server = ldap3.Server(url, get_info=ldap3.NONE)
    conns = []
    for _ in range(threads):
        conn = ldap3.Connection(
            server, authentication=ldap3.SIMPLE, raise_exceptions=False, check_names=False
        )
        conn.open(read_server_info=False)
        conns.append(conn)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    done_at: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads
    late = [0] * threads  # paced binds started > 10 ms after their due time
    share = [count // threads + (i < count % threads) for i in range(threads)]

    def loop(i: int) -> None:
        conn, lat = conns[i], latencies[i]
        for n in range(share[i]):
            dn, password = creds[(offset + i + n * threads) % len(creds)]
            conn.user, conn.password = dn, password
            if rate:
                due = start_at + (n * threads + i) / rate
                time.sleep(max(0.0, due - time.time()))
                # From the due time, however late this thread got to it.
                behind = max(0.0, time.time() - due)
                late[i] += behind > 0.010
                started = time.perf_counter() - behind
            else:
                started = time.perf_counter()
            ok = conn.bind(read_server_info=False)
            lat.append(time.perf_counter() - started)
            done_at[i].append(time.time())
            failures[i] += not ok

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = time.process_time(), time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1, cpu = time.time(), time.process_time() - cpu0
    for conn in conns:
        conn.unbind()
    print(
        json.dumps(
            {
                "count": sum(len(lat) for lat in latencies),
                "failures": sum(failures),
                "late": sum(late),
                "t0": t0,
                "t1": t1,
                "cpu_s": cpu,
                "latencies_ms": [round(1000 * x, 4) for lat in latencies for x in lat],
                "done_at": [t for done in done_at for t in done],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
