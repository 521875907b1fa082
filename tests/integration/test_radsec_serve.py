"""`authd serve` with radius.tls as operators run it: RadSec answers once READY=1 is
sent; on SIGHUP a key that does not fit its certificate is refused (the running
certificate stays), a renewed certificate is taken for new connections."""

from __future__ import annotations

import hashlib
import shutil
import signal
from pathlib import Path

from authd.radius import codec
from tests.fixtures.radius import access_request
from tests.fixtures.radsec import (
    NAS_SUBJECT,
    RadsecWorld,
    client_context,
    read_packet,
    tls_connect,
)
from tests.integration.test_daemon import Daemon, write_config
from tests.ports import free_ports


def _tls_section(port: int, folder: Path, world: RadsecWorld) -> str:
    return f"""\
  tls:
    listen: ["127.0.0.1:{port}"]
    cert_file: {folder / "radsec.pem"}
    key_file: {folder / "radsec.key"}
    ca_file: {world.ca.ca_file}
    clients:
      - name: nas-tls
        subject: "{NAS_SUBJECT}"
"""


def _install(cert: Path, key: Path, folder: Path) -> None:
    shutil.copyfile(cert, folder / "radsec.pem")
    shutil.copyfile(key, folder / "radsec.key")
    (folder / "radsec.key").chmod(0o600)


def _served_certificate(port: int, world: RadsecWorld) -> bytes:
    """SHA-256 of the server certificate, after a Status-Server round trip."""
    with tls_connect(port, client_context(world, world.nas)) as sock:
        data, auth = access_request(code=codec.STATUS_SERVER, secret="radsec")
        sock.sendall(data)
        assert codec.verify_reply(read_packet(sock), auth, b"radsec")
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest()


def test_serve_radsec_reload_refuses_bad_key_takes_renewed_certificate(
    tmp_path: Path, radsec_world: RadsecWorld
) -> None:
    """READY=1 with RadSec bound; SIGHUP with a mismatched key keeps the old certificate
    (and says why); SIGHUP with a renewed pair serves the new one."""
    world = radsec_world
    folder = tmp_path / "tls"
    folder.mkdir()
    _install(Path(world.server.cert_file), Path(world.server.key_file), folder)
    radius_port, http_port, tls_port = free_ports(3)
    config = tmp_path / "authd.yaml"
    write_config(config, radius_port, http_port)
    config.write_text(
        config.read_text().replace("http:\n", _tls_section(tls_port, folder, world) + "http:\n")
    )
    daemon = Daemon(config, tmp_path / "notify")
    try:
        _reload_certificates(daemon, tls_port, folder, world)
    finally:
        daemon.close()


def _reload_certificates(daemon: Daemon, tls_port: int, folder: Path, world: RadsecWorld) -> None:
    assert daemon.next_state() == "READY=1"
    original = _served_certificate(tls_port, world)

    shutil.copyfile(world.nas.key_file, folder / "radsec.key")  # not the certificate's key
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.next_state().startswith("RELOADING=1\n")
    assert daemon.next_state().startswith("READY=1\nSTATUS=reload refused: ")
    assert daemon.proc.poll() is None
    assert _served_certificate(tls_port, world) == original

    renewed = world.ca.issue(
        "127.0.0.1-renewed", server=True, dns=("localhost",), ips=("127.0.0.1",)
    )
    _install(Path(renewed.cert_file), Path(renewed.key_file), folder)
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.next_state().startswith("RELOADING=1\n")
    assert daemon.next_state() == "READY=1\nSTATUS=config reloaded"
    assert _served_certificate(tls_port, world) != original
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.next_state() == "STOPPING=1"
    out = daemon.output()
    assert daemon.proc.returncode == 0, out
    assert "reload refused" in out and "not a usable certificate and key pair" in out
    assert "radsec: listening on 127.0.0.1" in out
