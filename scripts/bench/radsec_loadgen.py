"""RadSec load generator for scripts/bench/radius --radsec (not a test).

Replays pre-encoded RADIUS packets over a few persistent TLS connections with a fixed
number in flight in total (spread evenly over the connections) and prints loadgen.c's
JSON: requests/s, p50/p99 latency, accepts, rejects, challenges, sent, lost.

Input file: [connection][u16 length][packet] records, as written by the bench. Replies
are matched per connection by Identifier (classic RadSec) or Token (RADIUS/1.1, when
--alpn radius/1.1 is given). With --udp the same loop drives connected UDP sockets
instead, the like-for-like client for a UDP comparison. Bounded: every reply is awaited
at most --timeout-ms.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field

ACCEPT, REJECT, CHALLENGE = 2, 3, 11


@dataclass
class Conn:
    sock: socket.socket  # an ssl.SSLSocket, or a connected UDP socket
    queue: list[bytes]
    window: int
    radius11: bool
    udp: bool = False
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    pending: dict[bytes, float] = field(default_factory=dict)
    next_index: int = 0

    def key(self, packet: bytes | bytearray) -> bytes:
        return bytes(packet[4:8]) if self.radius11 else bytes(packet[1:2])

    def fill(self, now: float) -> None:
        while len(self.pending) < self.window and self.next_index < len(self.queue):
            packet = self.queue[self.next_index]
            self.next_index += 1
            self.pending[self.key(packet)] = now
            if self.udp:
                self.sock.send(packet)  # one datagram each
            else:
                self.out += packet


def read_requests(path: str, connections: int) -> list[list[bytes]]:
    queues: list[list[bytes]] = [[] for _ in range(connections)]
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        conn, length = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
        queues[conn % connections].append(data[pos + 3 : pos + 3 + length])
        pos += 3 + length
    return queues


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("requests")
    ap.add_argument("port", type=int)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--window", type=int, default=64, help="in flight, over all connections")
    ap.add_argument("--udp", action="store_true", help="UDP sockets instead of TLS")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--alpn", default="")
    ap.add_argument("--timeout-ms", type=int, default=3000)
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    if args.alpn:
        ctx.set_alpn_protocols([args.alpn])
    radius11 = args.alpn == "radius/1.1"
    queues = read_requests(args.requests, args.connections)
    per_conn = max(1, args.window // args.connections)
    sel = selectors.DefaultSelector()
    conns = []
    for q in queues:
        sock: socket.socket
        if args.udp:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(("127.0.0.1", args.port))
        else:
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = ctx.wrap_socket(raw, server_hostname="localhost")
        sock.setblocking(False)
        conn = Conn(sock, q, per_conn, radius11, args.udp)
        conns.append(conn)
        events = selectors.EVENT_READ if args.udp else selectors.EVENT_READ | selectors.EVENT_WRITE
        sel.register(sock, events, conn)
    latencies: list[float] = []
    counts = {ACCEPT: 0, REJECT: 0, CHALLENGE: 0}
    sent = sum(len(q) for q in queues)
    timeout = args.timeout_ms / 1000
    start = time.monotonic()
    last_progress = start
    for c in conns:
        c.fill(start)
    while any(c.pending or c.next_index < len(c.queue) for c in conns):
        now = time.monotonic()
        if now - last_progress > timeout:
            break
        for sk, events in sel.select(timeout=0.05):
            c = sk.data
            if events & selectors.EVENT_WRITE and c.out:
                try:
                    n = c.sock.send(c.out)
                    del c.out[:n]
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
            if events & selectors.EVENT_READ:
                try:
                    while True:
                        chunk = c.sock.recv(65536)
                        if not chunk:
                            raise SystemExit("server closed a connection")
                        c.inbuf += chunk
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                now = time.monotonic()
                while len(c.inbuf) >= 4:
                    length = int.from_bytes(c.inbuf[2:4], "big")
                    if len(c.inbuf) < length:
                        break
                    reply = bytes(c.inbuf[:length])
                    del c.inbuf[:length]
                    sent_at = c.pending.pop(c.key(reply), None)
                    if sent_at is not None:
                        latencies.append(now - sent_at)
                        counts[reply[0]] = counts.get(reply[0], 0) + 1
                        last_progress = now
                c.fill(now)
    elapsed = time.monotonic() - start
    for c in conns:
        c.sock.close()
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(done - 1, int(p * done))] * 1000 if done else 0.0

    print(
        json.dumps(
            {
                "rps": done / elapsed if elapsed else 0.0,
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "accept": counts[ACCEPT],
                "reject": counts[REJECT],
                "challenge": counts[CHALLENGE],
                "sent": sent,
                "lost": sent - done,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
