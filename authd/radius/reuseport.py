"""RADIUS over SO_REUSEPORT worker sockets: spread one gateway's requests over workers.

The kernel's own choice hashes the source address and port, so one gateway (one source
port) would always land on one worker; instead a classic BPF program picks the socket
from the Request Authenticator (RFC 2865 §3: random per request, kept by a
retransmit), which spreads one gateway's requests evenly and still sends a retransmit
to the duplicate cache that saw the original.
"""

from __future__ import annotations

import ctypes
import socket

from twisted.logger import Logger

log = Logger(namespace="authd.radius.reuseport")


# SO_ATTACH_REUSEPORT_CBPF (Linux >= 4.5) and the classic BPF opcodes it needs.
_SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # A = 32-bit word at a payload offset
_BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # A = A % k
_BPF_RET_A = 0x06 | 0x10  # return A: the socket's index in the reuseport group


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def spread_by_authenticator(sock: socket.socket, workers: int) -> bool:
    """Make the kernel pick the worker socket of each datagram by its Request
    Authenticator (the UDP payload's octets 4-7, modulo `workers`).

    Attached once per reuseport group (every worker attaches the same program, which
    replaces it). Until all `workers` sockets are bound, and for datagrams shorter than
    8 octets, the kernel falls back to its source-address hash. False, logged, when the
    kernel refuses (the hash then stays in force).
    """
    program = (_SockFilter * 3)(
        _SockFilter(_BPF_LD_W_ABS, 0, 0, 4),
        _SockFilter(_BPF_ALU_MOD_K, 0, 0, workers),
        _SockFilter(_BPF_RET_A, 0, 0, 0),
    )
    fprog = _SockFprog(len(program), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    try:
        # The kernel copies the program during the call; `program` outlives it.
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
    except OSError as exc:
        log.warn(
            "radius: cannot spread requests over workers ({error}); the kernel hashes "
            "source addresses instead, so one gateway uses one worker",
            error=str(exc),
        )
        return False
    return True
