"""The RadSec TLS material: server key and chain, client CAs, client match rules.

`prepare` reads and checks every file of `radius.tls` at once and returns a ready
`RadsecMaterial` (or raises `RadsecConfigError` naming every problem): the listener
builds it at start and again on SIGHUP, then swaps it in whole, so a bad new
certificate leaves the running one in force; `authd check-config` runs the same checks.

The context: TLS 1.2 at least (RFC 9325 §3.1.1; 1.3 is OpenSSL's first choice), forward-
secret AEAD ciphers for 1.2, a client certificate required and verified against the
configured CAs (RFC 6614 §2.3), no session resumption (a resumed session would skip
the verification a reload may have tightened), ALPN `radius/1.1` or `radius/1.0`
(RFC 9765 §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from authd import pem
from authd.config.model import RadiusConfig, RadsecClient, RadsecConfig, Secret
from authd.radius.certmatch import (
    CertRule,
    RuleError,
    parse_fingerprint,
    parse_san,
    parse_subject,
    sha256,
)
from authd.radius.clients import ClientConfigError, build_client
from authd.radius.codec import RadiusDictionary
from authd.radius.radius11 import ALPN_1_0, ALPN_1_1

# RFC 6614 §2.3: the shared secret of RADIUS over TLS is this fixed string.
RADSEC_SECRET = "radsec"  # noqa: S105 - a public constant, not a secret
_ANY_ADDRESS = "0.0.0.0/0"  # RadSec clients are matched by certificate, never by address
_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"

# X509_V_ERR_* codes a client certificate commonly fails with, as bounded metric labels.
VERIFY_ERRORS = {
    2: "unknown_ca",
    7: "bad_signature",
    9: "certificate_not_yet_valid",
    10: "certificate_expired",
    18: "self_signed",
    19: "unknown_ca",
    20: "unknown_ca",
    21: "unknown_ca",
    23: "certificate_revoked",
    26: "bad_purpose",
}


class RadsecConfigError(ValueError):
    """`radius.tls` cannot be used: (key path, reason) pairs naming files, never their
    content."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {why}" for path, why in problems))
        self.problems = problems


class NoApplicationProtocol(SSL.Error):
    """The client offered ALPN protocols, none of them RADIUS (RFC 7301 §3.2: fatal
    no_application_protocol alert). An SSL.Error, so Twisted ends the handshake."""


@dataclass(frozen=True)
class RadsecMaterial:
    """What the listener needs for new connections; swapped whole on reload."""

    context: SSL.Context
    rules: tuple[CertRule, ...]
    config: RadsecConfig


class _Problem(ValueError):
    """One problem of one key; `prepare` collects them with their paths."""


def _read(path: str) -> bytes:
    return pem.read(path, _Problem)


def _certificates(path: str) -> list[x509.Certificate]:
    pems = pem.certificate_blocks(_read(path))
    if not pems:
        raise _Problem(f"{path} holds no PEM certificate")
    try:
        return [x509.load_pem_x509_certificate(p) for p in pems]
    except ValueError:
        raise _Problem(f"{path} holds an unreadable certificate") from None


def select_alpn(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    """RFC 9765 §3.2: RADIUS/1.1 when offered, else RADIUS/1.0; a client offering
    only other protocols is refused (no ALPN at all keeps classic RadSec)."""
    if ALPN_1_1 in offered:
        return ALPN_1_1
    if ALPN_1_0 in offered:
        return ALPN_1_0
    # Shaped like OpenSSL's error queue, which Twisted reads from any SSL.Error.
    raise NoApplicationProtocol([("authd", "alpn_select", "no RADIUS protocol offered")])


def _verify(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    """OpenSSL's verdict stands; a failure is handed to the connection for its log line
    and metric (Twisted keeps the TLS protocol as the connection's app data)."""
    if not ok:
        tls = conn.get_app_data()
        note = getattr(getattr(tls, "wrappedProtocol", None), "note_verify_error", None)
        if note is not None:
            note(errnum)
    return bool(ok)


def build_context(cfg: RadsecConfig, client_cas: Sequence[x509.Certificate]) -> SSL.Context:
    """The server context; _Problem when key and certificate are unusable."""
    chain = _certificates(cfg.cert_file)
    try:
        key = serialization.load_pem_private_key(_read(cfg.key_file), password=None)
    except (ValueError, TypeError):
        raise _Problem(f"{cfg.key_file} is not an unencrypted PEM private key") from None
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(_TLS12_CIPHERS)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_TICKET
        | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    objects: Any = key  # pyOpenSSL takes cryptography keys (its stubs name its own type)
    try:
        ctx.use_certificate(chain[0])
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(objects)
        ctx.check_privatekey()
    except (SSL.Error, TypeError, ValueError):
        raise _Problem(
            f"{cfg.cert_file} and {cfg.key_file} are not a usable certificate and key pair"
        ) from None
    store = ctx.get_cert_store()
    assert store is not None
    seen: set[bytes] = set()
    for ca in client_cas:
        if sha256(ca) not in seen:
            seen.add(sha256(ca))
            store.add_cert(crypto.X509.from_cryptography(ca))
            # Named in the CertificateRequest, so a client holding several certificates
            # picks one we accept.
            ctx.add_client_ca(ca)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
    ctx.set_alpn_select_callback(select_alpn)
    return ctx


def _rule(
    rc: RadsecClient,
    i: int,
    radius: RadiusConfig,
    dictionary: RadiusDictionary,
    problems: list[tuple[str, str]],
) -> tuple[CertRule | None, list[x509.Certificate]]:
    path = f"radius.tls.clients[{i}]"
    cas: list[x509.Certificate] = []
    try:
        if rc.ca_file:
            try:
                cas = _certificates(rc.ca_file)
            except _Problem as exc:
                problems.append((f"{path}.ca_file", str(exc)))
                return None, cas
        subject = parse_subject(rc.subject) if rc.subject else None
        sans = frozenset(parse_san(s) for s in rc.san)
        fingerprints = frozenset(parse_fingerprint(f) for f in rc.fingerprint_sha256)
        if subject is None and not sans and not fingerprints:
            raise RuleError(
                "needs subject, san or fingerprint_sha256 (a CA alone admits "
                "every certificate it issued)"
            )
        client = build_client(
            replace(rc, address=_ANY_ADDRESS, secret=Secret(RADSEC_SECRET)), radius, dictionary
        )
    except (RuleError, ClientConfigError) as exc:
        problems.append((path, str(exc)))
        return None, cas
    rule = CertRule(
        client=client,
        ca_fingerprints=frozenset(sha256(c) for c in cas),
        subject=subject,
        sans=sans,
        fingerprints=fingerprints,
    )
    return rule, cas


def prepare(radius: RadiusConfig, dictionary: RadiusDictionary) -> RadsecMaterial:
    """Everything `radius.tls` names, read and checked; RadsecConfigError lists every
    problem. Only call when `radius.tls` is set."""
    cfg = radius.tls
    assert cfg is not None
    problems: list[tuple[str, str]] = []
    cas: list[x509.Certificate] = []
    if cfg.ca_file:
        try:
            cas = _certificates(cfg.ca_file)
        except _Problem as exc:
            problems.append(("radius.tls.ca_file", str(exc)))
    rules: list[CertRule] = []
    names = {c.name for c in radius.clients}
    for i, rc in enumerate(cfg.clients):
        rule, own = _rule(rc, i, radius, dictionary, problems)
        cas.extend(own)
        if rule is None:
            continue
        if rule.client.name in names:
            problems.append(
                (f"radius.tls.clients[{i}].name", f"duplicate client name {rule.client.name}")
            )
        names.add(rule.client.name)
        rules.append(rule)
    if not cas:
        problems.append(
            ("radius.tls.ca_file", "needed (or a ca_file per client) to verify clients")
        )
    context = None
    if cfg.cert_file and cfg.key_file:
        try:
            context = build_context(cfg, cas)
        except _Problem as exc:
            problems.append(("radius.tls.cert_file", str(exc)))
    else:
        problems.append(("radius.tls.cert_file", "RadSec needs cert_file and key_file"))
    if problems or context is None:
        raise RadsecConfigError(problems)
    return RadsecMaterial(context=context, rules=tuple(rules), config=cfg)
