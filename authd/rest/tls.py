"""TLS for the HTTP listener: modern protocol versions only, optional client certificates.

Built once at start from `http.tls` (PEM files); TLS 1.2 is the floor (RFC 9325 §3.1.1)
and OpenSSL's default cipher choice for it is kept. With `client_ca_file`, a client must
present a certificate signed by that CA before any HTTP is spoken (appliance pinning);
the API key is still required on top.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl

from authd import pem
from authd.config.model import TlsConfig

_PEM_CERT = pem.PEM_CERTIFICATE


class TlsConfigError(ValueError):
    """A certificate or key file cannot be used; names the file, never its content."""


def _read(path: str) -> bytes:
    return pem.read(path, TlsConfigError)


def context_factory(tls: TlsConfig) -> ssl.CertificateOptions:
    """The server context for `tls`; raises TlsConfigError on unusable files."""
    if not tls.cert_file or not tls.key_file:
        raise TlsConfigError("http.tls needs cert_file and key_file")
    certs = _PEM_CERT.findall(_read(tls.cert_file))
    if not certs:
        raise TlsConfigError(f"{tls.cert_file}: no PEM certificate")
    try:
        key = serialization.load_pem_private_key(_read(tls.key_file), password=None)
        leaf = x509.load_pem_x509_certificate(certs[0])
        chain = [x509.load_pem_x509_certificate(c) for c in certs[1:]]
        kwargs: dict[str, object] = {}
        if tls.client_ca_file:
            cas = _PEM_CERT.findall(_read(tls.client_ca_file))
            if not cas:
                raise TlsConfigError(f"{tls.client_ca_file}: no PEM certificate")
            kwargs = {
                "verify": True,
                "requireCertificate": True,
                "caCerts": [crypto.load_certificate(crypto.FILETYPE_PEM, c) for c in cas],
            }
        # Twisted's stubs name pyOpenSSL types; pyOpenSSL takes cryptography objects too
        # (and deprecates its own), hence the Any.
        objects: dict[str, Any] = {
            "privateKey": key,
            "certificate": leaf,
            "extraCertChain": chain or None,
        }
        return ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **objects, **kwargs)  # type: ignore[arg-type]
    except TlsConfigError:
        raise
    except Exception as exc:  # OpenSSL.SSL.Error and friends: report the files, not bytes
        raise TlsConfigError(
            f"{tls.cert_file} / {tls.key_file}: unusable ({type(exc).__name__})"
        ) from None
