"""sd_notify: datagrams reach a real unix socket; nothing happens without systemd."""

import socket
from pathlib import Path

from authd.systemd import notify


def test_notify_without_socket_is_a_no_op() -> None:
    """Outside systemd there is no NOTIFY_SOCKET and notify() reports it sent nothing."""
    assert notify("READY=1", environ={}) is False


def test_notify_sends_state_to_socket(tmp_path: Path) -> None:
    """The state string arrives verbatim as one datagram on $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        assert notify("READY=1", environ={"NOTIFY_SOCKET": path}) is True
        assert server.recv(64) == b"READY=1"


def test_notify_abstract_socket() -> None:
    """An '@' address means the Linux abstract namespace (sd_notify(3))."""
    name = f"authd-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"STOPPING=1"
