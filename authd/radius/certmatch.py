"""Which RadSec client a verified certificate chain belongs to (RFC 6614 §2.3).

A RadSec client is named by its certificate, never by its source address: the chain
must run to the client's CA (when it names one) and the leaf must carry the configured
subject, one of the configured subjectAltNames and one of the configured fingerprints
(each rule only when set; at least one is required, so a CA alone never admits every
certificate it ever issued). Pure functions of the parsed chain, testable without TLS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authd.radius.clients import Client

SanEntry = tuple[str, str]  # (kind, normalised value)
SAN_KINDS = ("DNS", "IP", "URI", "email")


class RuleError(ValueError):
    """A match rule that cannot be used; the message says which and why."""


def parse_san(text: str) -> SanEntry:
    """`DNS:name`, `IP:address`, `URI:uri` or `email:address`, normalised for compare."""
    kind, sep, value = text.partition(":")
    if not sep or not value or kind not in SAN_KINDS:
        raise RuleError(f"{text!r} is not DNS:, IP:, URI: or email: followed by a value")
    if kind == "IP":
        try:
            return kind, str(ipaddress.ip_address(value))
        except ValueError:
            raise RuleError(f"{value!r} is not an IP address") from None
    # RFC 5280 §7.2 / §7.5: DNS names and mail domains compare case-insensitively.
    return kind, value.lower() if kind in ("DNS", "email") else value


def parse_fingerprint(text: str) -> bytes:
    """32 octets from 64 hex digits, colons and spaces allowed."""
    digits = text.replace(":", "").replace(" ", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise RuleError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return raw


Subject = frozenset[tuple[str, str]]


def subject_of(name: x509.Name) -> Subject:
    """A name's (attribute OID, value) pairs. Compared as a set: RFC 4514 writes a DN
    last RDN first while `openssl x509 -subject` prints it first RDN first, and an
    operator may copy either."""
    return frozenset((a.oid.dotted_string, str(a.value)) for a in name)


def parse_subject(text: str) -> Subject:
    """An RFC 4514 distinguished name (`CN=nas1,O=Example`)."""
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError:
        raise RuleError(f"{text!r} is not an RFC 4514 distinguished name") from None
    if not len(name):
        raise RuleError(f"{text!r} names no attribute")
    return subject_of(name)


def certificate_sans(cert: x509.Certificate) -> set[SanEntry]:
    """The leaf's subjectAltNames of the kinds rules can name, normalised."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    out: set[SanEntry] = set()
    out.update(("DNS", v.lower()) for v in ext.get_values_for_type(x509.DNSName))
    out.update(("IP", str(v)) for v in ext.get_values_for_type(x509.IPAddress))
    out.update(("URI", v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier))
    out.update(("email", v.lower()) for v in ext.get_values_for_type(x509.RFC822Name))
    return out


def sha256(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class CertRule:
    """One client entry's rules; empty sets mean "not checked"."""

    client: Client
    ca_fingerprints: frozenset[bytes]
    subject: Subject | None
    sans: frozenset[SanEntry]
    fingerprints: frozenset[bytes]

    def matches(self, leaf: x509.Certificate, issuers: set[bytes]) -> bool:
        if self.ca_fingerprints and not self.ca_fingerprints & issuers:
            return False
        if self.subject is not None and subject_of(leaf.subject) != self.subject:
            return False
        if self.sans and not self.sans & certificate_sans(leaf):
            return False
        return not self.fingerprints or sha256(leaf) in self.fingerprints


def match(rules: Sequence[CertRule], chain: Sequence[x509.Certificate]) -> Client | None:
    """The first client (config order) whose rules the verified chain (leaf first)
    satisfies, or None."""
    if not chain:
        return None
    leaf = chain[0]
    issuers = {sha256(c) for c in chain[1:]}
    for rule in rules:
        if rule.matches(leaf, issuers):
            return rule.client
    return None
