"""`scripts/bench/radius --radsec`: RadSec against UDP on the same daemon, same run.

One authd (workers=1, pinned to core 0, OTP-only HOTP users as workload (a)) listens
on UDP and on RadSec. Interleaved runs: UDP through loadgen.c, classic RadSec and
RADIUS/1.1 through radsec_loadgen.py (the same number in flight, spread over a few
persistent TLS connections), each load generator on the other core. Every request is a
real accept of a distinct (user, HOTP counter) pair.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import radius_bench as rb

from authd import hot_path_build
from authd.radius import codec
from scripts.bench import verdict
from tests.fixtures.radsec import Issued, Pki

RADSEC = b"radsec"


def reencode(
    packet: bytes, index: int, connections: int, radius11: bool, secret: bytes = RADSEC
) -> bytes:
    """A UDP bench packet (shared secret rb.SECRET) as radsec_loadgen.py sends it on
    connection index % connections: classic under `secret` (the fixed `radsec` for
    RadSec), or RADIUS/1.1 (Token, clear User-Password)."""
    p = codec.decode(packet)
    user = p.first(codec.USER_NAME) or b""
    hidden = p.first(codec.USER_PASSWORD) or b""
    code = codec.decode_password(hidden, rb.SECRET.encode(), p.authenticator)
    if radius11:
        attrs = [(codec.USER_NAME, user), (codec.USER_PASSWORD, code)]
        body = b"".join(codec.attribute(t, v) for t, v in attrs)
        token = index.to_bytes(4, "big")
        return bytes((1, 0)) + (20 + len(body)).to_bytes(2, "big") + token + bytes(12) + body
    auth = p.authenticator
    attrs = [
        (codec.USER_NAME, user),
        (codec.USER_PASSWORD, codec.encode_password(code, secret, auth)),
    ]
    identifier = (index // connections) % 256
    return codec.encode_request(codec.ACCESS_REQUEST, identifier, auth, secret, attrs)


def write_stream_requests(path: Path, packets: list[bytes], connections: int) -> None:
    """[connection][u16 length][packet]: request i goes to connection i % connections."""
    with open(path, "wb") as f:
        for i, p in enumerate(packets):
            f.write(bytes((i % connections,)) + len(p).to_bytes(2, "big") + p)


def run_stream_loadgen(
    tlsloadgen: Path | None,
    reqfile: Path,
    port: int,
    args: argparse.Namespace,
    client: Issued,
    ca: str,
    alpn: str,
    pids: list[int],
) -> tuple[dict[str, float], float]:
    """One run of tlsloadgen.c (given) or radsec_loadgen.py; (stats, server CPU s).
    `alpn`: "" (none), "radius/1.1", or "udp" (radsec_loadgen.py over UDP)."""
    if tlsloadgen is not None:
        command = [
            str(tlsloadgen),
            str(reqfile),
            str(port),
            str(args.connections),
            str(args.window),
            client.cert_file,
            client.key_file,
            ca,
            alpn or "-",
            "3000",
        ]
    else:
        command = [
            sys.executable,
            str(rb.REPO / "scripts/bench/radsec_loadgen.py"),
            str(reqfile),
            str(port),
            f"--connections={args.connections}",
            f"--window={args.window}",
            f"--cert={client.cert_file}",
            f"--key={client.key_file}",
            f"--ca={ca}",
            *(["--udp"] if alpn == "udp" else [f"--alpn={alpn}"] if alpn else []),
        ]
    before = rb.cpu_seconds(pids)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [*rb.taskset(rb.other_core("0")), *command],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    after = rb.cpu_seconds(pids)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats: dict[str, float] = rb.json.loads(out.stdout)
    # The client's own CPU: near 1 s per second, the client is the bottleneck.
    spent = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
    stats["client_cpu_us"] = spent / max(1.0, stats["sent"]) * 1e6
    return stats, after - before


def radsec_bench(args: argparse.Namespace) -> int:
    argon = {"time_cost": 3, "memory_cost_kib": 65536, "parallelism": 1}
    with rb.tempfile.TemporaryDirectory(prefix="authd-bench-radsec-") as tmpname:
        tmp = Path(args.keep) if args.keep else Path(tmpname)
        tmp.mkdir(parents=True, exist_ok=True)
        loadgen, tlsloadgen = tmp / "loadgen", tmp / "tlsloadgen"
        subprocess.run(
            ["gcc", "-O2", "-o", str(loadgen), str(rb.REPO / "scripts/bench/loadgen.c")], check=True
        )
        # libssl-dev: the OpenSSL headers (Debian); the C client keeps the client's cost
        # of TLS small next to the server's.
        subprocess.run(
            [
                "gcc",
                "-O2",
                "-o",
                str(tlsloadgen),
                str(rb.REPO / "scripts/bench/tlsloadgen.c"),
                "-lssl",
                "-lcrypto",
                "-lpthread",
            ],
            check=True,
        )
        url = f"sqlite:///{tmp / 'authd.db'}"
        # (row, client, ALPN or "udp"): C clients first (the figures to quote: loadgen.c
        # for UDP, tlsloadgen.c for RadSec), then radsec_loadgen.py's one Python event
        # loop over UDP and over TLS, a like-for-like check.
        variants = (
            ("UDP, C client", "c", "udp"),
            ("RadSec (TLS, classic), C client", "c", ""),
            ("RadSec (TLS, RADIUS/1.1), C client", "c", "radius/1.1"),
            ("UDP, Python client", "py", "udp"),
            ("RadSec (TLS, classic), Python client", "py", ""),
            ("RadSec (TLS, RADIUS/1.1), Python client", "py", "radius/1.1"),
        )
        total = args.requests * args.repeat * len(variants)
        rb.log(f"building the authd store: {args.users} HOTP users ({total} codes)")
        # HOTP users only (no password workload); each request a user's next code, a
        # user coming back at least `window` requests later (codes arrive in order).
        users, _ = rb.authd_world(tmp, argparse.Namespace(**{**vars(args), "b_requests": 0}),
                                  argon, url)
        packets = users.requests(total, args.window)
        pki = Pki(tmp / "pki")
        server = pki.issue("127.0.0.1", server=True, dns=("localhost",), ips=("127.0.0.1",))
        client = pki.issue("bench-nas")
        port, tls_port = rb.free_port(), rb.free_tcp_port()
        cfg = rb.authd_config(tmp, port, "none", 1, argon, args.threads, True, url)
        cfg.write_text(
            cfg.read_text()
            + f"""  tls:
    listen: ["127.0.0.1:{tls_port}"]
    cert_file: "{server.cert_file}"
    key_file: "{server.key_file}"
    ca_file: "{pki.ca_file}"
    clients:
      - name: bench-tls
        subject: "CN=bench-nas,O=Example"
        first_factor: none
        otp_mode: inline
"""
        )
        proc = rb.start_authd(cfg, port, 1, "0")
        pids = rb.server_pids(proc)
        runs: dict[str, list[rb.Result]] = {v[0]: [] for v in variants}
        chunk = 0
        try:
            for n in range(args.repeat):
                for variant, kind, alpn in variants:
                    part = packets[chunk * args.requests : (chunk + 1) * args.requests]
                    chunk += 1
                    rb.log(f"authd {variant}, workers=1, cores=0, run {n + 1}")
                    udp = alpn == "udp"
                    if udp and kind == "c":
                        reqfile = tmp / "udp.bin"
                        rb.write_requests(reqfile, part)
                        stats, cpu = rb.run_loadgen(
                            loadgen, reqfile, port, args.window, rb.other_core("0"), pids
                        )
                    else:
                        r11 = alpn == "radius/1.1"
                        secret = rb.SECRET.encode() if udp else RADSEC
                        reqfile = tmp / "stream.bin"
                        write_stream_requests(
                            reqfile,
                            [
                                reencode(p[2], i, args.connections, r11, secret)
                                for i, p in enumerate(part)
                            ],
                            args.connections,
                        )
                        stats, cpu = run_stream_loadgen(
                            tlsloadgen if kind == "c" else None,
                            reqfile,
                            port if udp else tls_port,
                            args,
                            client,
                            pki.ca_file,
                            alpn,
                            pids,
                        )
                    # Every request is built to be accepted: any other answer is wrong.
                    stats.setdefault("wrong", stats["reject"] + stats["challenge"])
                    stats.setdefault("elapsed", stats["sent"] / max(stats["rps"], 1e-9))
                    r = rb.result(f"authd (a) OTP-only, {variant}", "0", stats, cpu)
                    if r.problem:
                        verdict.shout(r.name, len(runs[variant]) + 1, r.problem)
                    r.peer_cpu_us = stats.get("client_cpu_us", 0.0)
                    runs[variant].append(r)
        finally:
            rb.stop([proc])
    kept = [verdict.median_kept(runs[v[0]]) for v in variants]
    if any(r is None for r in kept):
        print("!!! every run of a variant was discarded: no table", file=sys.stderr)
        return 1
    results = [r for r in kept if r is not None]
    print()
    print(
        f"store: sqlite; {args.window} requests in flight (RadSec: over {args.connections} "
        f"persistent connections); loadgen on core 1; median of {args.repeat} interleaved "
        f"runs of {args.requests} requests; authd hot path: {hot_path_build()}"
    )
    print(
        f"| {'server':<60} | cores | req/s   | p50 ms | p99 ms | CPU µs/req "
        "| client µs/req | accepted |"
    )
    print(f"|{'-' * 62}|-------|---------|--------|--------|------------|{'-' * 15}|----------|")
    for r in results:
        lost = f" lost {r.lost}" if r.lost else ""
        client_cpu = f"{r.peer_cpu_us:13.0f}" if r.peer_cpu_us else f"{'-':>13}"
        print(
            f"| {r.name:<60} | {r.cores:<5} | {r.rps:7.0f} | {r.p50:6.2f} | {r.p99:6.2f} "
            f"| {r.cpu_us:10.0f} | {client_cpu} | {r.accept}/{r.sent}{lost} |"
        )
    for udp, r in (
        (results[0], results[1]),
        (results[0], results[2]),
        (results[3], results[4]),
        (results[3], results[5]),
    ):
        print(
            f"ratio {r.name.split(', ', 1)[1]} / {udp.name.split(', ', 1)[1]}: "
            f"{r.rps / max(udp.rps, 1e-9):.1%} of "
            f"req/s, {r.cpu_us / max(udp.cpu_us, 1e-9):.2f}x CPU/req"
        )
    return 0
