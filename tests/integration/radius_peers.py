"""Real RADIUS relays for the RadSec integration tests: radsecproxy and FreeRADIUS 3.2,
each from a temp config on loopback ports, plus the radclient that feeds them.

Start-up waits are bounded (a relay that does not answer Status-Server in time fails
the test with its log); every process is stopped by PID.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.radius import SECRET, SEED_HEX, need
from tests.fixtures.radsec import Issued, RadsecWorld
from tests.ports import free_port

RADCLIENT = "/usr/bin/radclient"


@dataclass
class Peer:
    """A relay process: its UDP port and its log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def radclient(
    port: int, user: str, password: str, tmp: Path, code: str = "auth", extra: tuple[str, ...] = ()
) -> tuple[int, str]:
    """One radclient request with Message-Authenticator (one try, 5 s timeout)."""
    prog = need(RADCLIENT, "freeradius-utils")
    infile = tmp / "in.txt"
    lines = [f'User-Name = "{user}"', f'User-Password = "{password}"'] if code == "auth" else []
    infile.write_text("\n".join([*lines, *extra, "Message-Authenticator = 0x00"]) + "\n")
    out = subprocess.run(
        [prog, "-x", "-r", "1", "-t", "5", "-f", str(infile), f"127.0.0.1:{port}", code, SECRET],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.returncode, out.stdout + out.stderr


def oathtool_code() -> str:
    prog = need("oathtool", "oathtool")
    out = subprocess.run(
        [prog, "--totp", SEED_HEX], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def _wait_answering(peer: Peer, tmp: Path, timeout: float = 15.0) -> None:
    """Until the relay answers a Status-Server of its own (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            break
        rc, _ = radclient(peer.port, "", "", tmp, code="status")
        if rc == 0:
            return
        time.sleep(0.2)
    peer.stop()
    raise AssertionError(f"relay did not start:\n{peer.log()[-3000:]}")


# ---------------------------------------------------------------- radsecproxy
RADSECPROXY_CONF = """
ListenUDP 127.0.0.1:{port}
LogLevel 4
tls default {{
    CACertificateFile {ca}
    CertificateFile {cert}
    CertificateKeyFile {key}
}}
client nas {{
    host 127.0.0.1
    type udp
    secret {secret}
}}
server authd {{
    host 127.0.0.1
    port {tls_port}
    type tls
    secret radsec
    # auto: a Status-Server to authd at connect, to learn that it answers them.
    StatusServer auto
    CertificateNameCheck off
}}
realm * {{
    server authd
}}
"""


def start_radsecproxy(tmp: Path, world: RadsecWorld, tls_port: int) -> Peer:
    """radsecproxy relaying UDP (radclient, SECRET) to authd's RadSec port, presenting
    the proxy certificate."""
    binary = need("/usr/sbin/radsecproxy", "radsecproxy")
    port = free_port()
    conf = tmp / "radsecproxy.conf"
    conf.write_text(
        RADSECPROXY_CONF.format(
            port=port,
            ca=world.ca.ca_file,
            cert=world.proxy.cert_file,
            key=world.proxy.key_file,
            secret=SECRET,
            tls_port=tls_port,
        )
    )
    log_file = tmp / "radsecproxy.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [binary, "-f", "-c", str(conf), "-d", "4", "-i", str(tmp / "radsecproxy.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    peer = Peer(proc, port, log_file)
    _wait_answering(peer, tmp)
    return peer


# ---------------------------------------------------------------- FreeRADIUS
# The least radiusd.conf FreeRADIUS 3.2 starts from: paths into the temp dir, one UDP
# listener that proxies everything to the `tls` home server.
FREERADIUS_CONF = """
libdir = /usr/lib/freeradius
raddbdir = {d}
confdir = {d}
logdir = {d}
run_dir = {d}
pidfile = {d}/radiusd.pid
proxy_requests = yes
log {{
  destination = stdout
}}
security {{
  status_server = yes
  require_message_authenticator = yes
}}
client local {{
  ipaddr = 127.0.0.1
  secret = {secret}
}}
home_server authd {{
  type = auth
  ipaddr = 127.0.0.1
  port = {tls_port}
  proto = tcp
  secret = radsec
  response_window = 10
  tls {{
    private_key_file = {key}
    certificate_file = {cert}
    ca_file = {ca}
    fragment_size = 8192
  }}
}}
home_server_pool authd_pool {{
  type = fail-over
  home_server = authd
}}
realm authd {{
  auth_pool = authd_pool
  nostrip
}}
modules {{
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {port}
  }}
  authorize {{
    update control {{
      &Proxy-To-Realm := "authd"
    }}
  }}
  authenticate {{
  }}
}}
"""


def start_freeradius(tmp: Path, world: RadsecWorld, cert: Issued, tls_port: int) -> Peer:
    """FreeRADIUS 3.2 (radiusd -X style, own config dir) proxying every Access-Request
    from radclient to authd's RadSec port through a `tls` home_server."""
    binary = need("/usr/sbin/freeradius", "freeradius")
    port = free_port()
    d = tmp / "raddb"
    d.mkdir()
    (d / "radiusd.conf").write_text(
        FREERADIUS_CONF.format(
            d=d,
            port=port,
            secret=SECRET,
            tls_port=tls_port,
            key=cert.key_file,
            cert=cert.cert_file,
            ca=world.ca.ca_file,
        )
    )
    log_file = tmp / "freeradius.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [binary, "-X", "-d", str(d), "-l", "stdout"], stdout=log, stderr=subprocess.STDOUT
        )
    peer = Peer(proc, port, log_file)
    _wait_answering(peer, tmp)
    return peer
