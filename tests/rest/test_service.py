"""HttpService lifecycle: bind, stop with requests in flight, reload, TLS, and what
reaches logs and clients when something breaks."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl as pyssl
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import globalLogPublisher

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.config.model import ApiKey, TlsConfig
from authd.rest.apikeys import ApiKeyConfigError
from tests.rest.harness import (
    ADMIN_KEY,
    PASSWORD,
    VALIDATE_KEY,
    App,
    make_config,
    sha256_hex,
    start_app,
)


class GatedEngine:
    """A hand-written fake engine whose answers wait until the test releases them."""

    def __init__(self) -> None:
        self.pending: list[tuple[AuthRequest, Deferred[Decision]]] = []

    def __call__(self, req: AuthRequest) -> Deferred[Decision]:
        d: Deferred[Decision] = Deferred()
        self.pending.append((req, d))
        return d

    def release(self, outcome: Outcome = Outcome.ACCEPT) -> None:
        for req, d in self.pending:
            d.callback(Decision(outcome, Reason.OK, req.user))
        self.pending = []


def test_bind_failure_raises_and_binds_nothing(tmp_path: Path) -> None:
    """A taken port makes startService raise; an address bound before it is released."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = make_config(tmp_path)
    config = replace(config, http=replace(config.http, listen=("127.0.0.1:0", f"127.0.0.1:{port}")))
    try:
        with pytest.raises(CannotListenError):
            start_app(tmp_path, config)
    finally:
        taken.close()


def test_stop_waits_for_in_flight_requests(tmp_path: Path) -> None:
    """stopService stops listening at once but its Deferred fires only after the request
    being decided has been answered (200, not a dropped connection)."""
    engine = GatedEngine()
    app = start_app(tmp_path, authenticate=engine)
    try:
        pending = app.request_later(
            "POST", "/api/v1/otp/check", {"user": "u1", "otp": "123456"}, key=VALIDATE_KEY
        )
        while not engine.pending:
            app.loop.reactor.iterate(0.002)
        stopped = app.service.stopService()
        done: list[object] = []
        stopped.addBoth(done.append)
        for _ in range(20):
            app.loop.reactor.iterate(0.002)
        assert done == []
        assert app.service.bound_ports() == []
        engine.release()
        assert app.loop.run(pending).json == {"result": "accept"}
        for _ in range(20):
            if done:
                break
            app.loop.reactor.iterate(0.002)
        assert done == [None]
    finally:
        app.close()


def test_reload_swaps_keys_and_refuses_bad_ones(tmp_path: Path) -> None:
    """After reload the old key is 401 and the new one works; a reload naming an
    unreadable key file raises and leaves the previous keys in force."""
    app = start_app(tmp_path)
    app.add_user("alice")
    try:
        new_key = "rotated-key-abcdefghijklmnop"
        config = replace(
            app.config,
            http=replace(
                app.config.http,
                api_keys=(
                    ApiKey(name="vpn2", key_sha256=sha256_hex(new_key), scopes=("validate",)),
                ),
            ),
        )
        app.service.reload(config)
        assert app.validate("alice", password="x", otp="1").status == 401
        assert app.validate("alice", password="x", otp="1", key=new_key).status == 200
        broken = replace(
            config,
            http=replace(
                config.http, api_keys=(ApiKey(name="gone", key_file=str(tmp_path / "missing.key")),)
            ),
        )
        with pytest.raises(ApiKeyConfigError) as err:
            app.service.reload(broken)
        assert "missing.key" in str(err.value)
        assert app.validate("alice", password="x", otp="1", key=new_key).status == 200
    finally:
        app.close()


def test_unexpected_error_is_a_bare_500_and_logs_no_secret(tmp_path: Path) -> None:
    """An exception escaping the engine (carrying a secret in its message) gives the
    client only {"error": "internal"}, and the log line names the type, not the text."""

    def explode(req: AuthRequest) -> Deferred[Decision]:
        raise ValueError(f"cannot handle password {req.password}")

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    app = start_app(tmp_path, authenticate=explode)
    try:
        r = app.validate("alice", password=PASSWORD, otp="424242")
        assert r.status == 500
        assert r.json == {"error": "internal", "detail": "internal error"}
        assert PASSWORD.encode() not in r.raw and b"Traceback" not in r.raw
    finally:
        app.close()
        globalLogPublisher.removeObserver(events.append)
    text = repr(events)
    assert "ValueError" in text
    for secret in (PASSWORD, "424242", VALIDATE_KEY, ADMIN_KEY):
        assert secret not in text


def test_no_secret_reaches_the_log_on_a_busy_run(app: App) -> None:
    """Accepts, rejects, challenges, 4xx and admin calls log no password, code or key."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        code = app.totp_now()
        app.validate("alice", password=PASSWORD, otp=code)
        app.validate("alice", password="Wr0ng-Passw0rd!", otp="987654")
        app.validate("alice", password=PASSWORD)
        app.request(
            "POST",
            "/api/v1/validate",
            raw=b'{"user":"a","password":"Wr0ng-Passw0rd!"',
            key=VALIDATE_KEY,
            headers={"content-type": "application/json"},
        )
        app.request("GET", "/api/v1/admin/users", key="Bad-Key-Guess-123")
        app.request("PUT", "/api/v1/admin/users/alice/pin", {"pin": "8264"}, key=ADMIN_KEY)
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = repr(events)
    for secret in (
        PASSWORD,
        "Wr0ng-Passw0rd!",
        code,
        "987654",
        "8264",
        VALIDATE_KEY,
        ADMIN_KEY,
        "Bad-Key-Guess-123",
    ):
        assert secret not in text


# ---------------------------------------------------------------- TLS
def _cert(
    tmp: Path, name: str, issuer: tuple[Any, Any] | None = None, ca: bool = False
) -> tuple[Path, Path, Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert, key


def _https_get(app: App, ctx: pyssl.SSLContext, path: str = "/healthz") -> bytes:
    """A blocking TLS client in a thread while the test drives the reactor."""
    out: dict[str, Any] = {}

    def client() -> None:
        try:
            with (
                socket.create_connection(("127.0.0.1", app.port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            ):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
                out["data"] = b"".join(chunks)
        except Exception as exc:  # handed to the test thread below
            out["error"] = exc

    t = threading.Thread(target=client)
    t.start()
    while t.is_alive():
        app.loop.reactor.iterate(0.002)
    t.join()
    if "error" in out:
        raise out["error"]
    return bytes(out["data"])


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_listener_speaks_modern_tls_only(tmp_path: Path) -> None:
    """With http.tls, the listener answers HTTPS with TLS >= 1.2 and refuses TLS 1.1."""
    cert, key, _, _ = _cert(tmp_path, "server")
    config = make_config(tmp_path, tls=TlsConfig(cert_file=str(cert), key_file=str(key)))
    app = start_app(tmp_path, config)
    try:
        ctx = pyssl.create_default_context(cafile=str(cert))
        assert b'{"status":"ok"}' in _https_get(app, ctx)
        old = pyssl.create_default_context(cafile=str(cert))
        old.minimum_version = pyssl.TLSVersion.TLSv1
        old.maximum_version = pyssl.TLSVersion.TLSv1_1
        with contextlib.suppress(pyssl.SSLError):
            old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises((pyssl.SSLError, ConnectionError)):
            _https_get(app, old)
    finally:
        app.close()


def test_tls_client_certificate_required_when_configured(tmp_path: Path) -> None:
    """With client_ca_file, a client without a certificate from that CA gets no HTTP."""
    ca_cert_path, _, ca_cert, ca_key = _cert(tmp_path, "ca", ca=True)
    cert, key, _, _ = _cert(tmp_path, "server")
    client_cert, client_key, _, _ = _cert(tmp_path, "appliance", issuer=(ca_cert, ca_key))
    config = make_config(
        tmp_path,
        tls=TlsConfig(cert_file=str(cert), key_file=str(key), client_ca_file=str(ca_cert_path)),
    )
    app = start_app(tmp_path, config)
    try:
        ctx = pyssl.create_default_context(cafile=str(cert))
        ctx.load_cert_chain(str(client_cert), str(client_key))
        assert b'{"status":"ok"}' in _https_get(app, ctx)
        anonymous = pyssl.create_default_context(cafile=str(cert))
        with pytest.raises((pyssl.SSLError, ConnectionError)):
            data = _https_get(app, anonymous)
            assert b"200 OK" not in data
            raise ConnectionError("closed without an answer")
    finally:
        app.close()


def test_mounted_resource_is_served_beside_the_api(app: App) -> None:
    """`mount` (the portal's hook) serves a child resource; the API is untouched."""
    from twisted.web.resource import Resource

    class Portal(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:  # noqa: N802 (Twisted name)
            return b"<p>portal</p>"

    app.service.mount(b"selfservice", Portal())
    r = app.request("GET", "/selfservice")
    assert (r.status, r.raw) == (200, b"<p>portal</p>")
    assert app.request("GET", "/healthz").json == {"status": "ok"}
    assert app.request("GET", "/selfservicex").status == 404
