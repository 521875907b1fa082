"""Client matching by certificate (RFC 6614 §2.3): each rule alone and together, the
client's CA, and the syntax checks that keep a bad rule out of a running config."""

from __future__ import annotations

import pytest

from authd.radius import certmatch
from authd.radius.certmatch import CertRule, RuleError
from authd.radius.clients import Client
from tests.fixtures.radsec import RadsecWorld, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> RadsecWorld:
    return make_world(tmp_path_factory.mktemp("certmatch"))


def _client(name: str) -> Client:
    from authd.config.model import RadiusClient, RadiusConfig, Secret
    from authd.radius.clients import build_client
    from authd.radius.codec import RadiusDictionary

    rc = RadiusClient(name=name, address="0.0.0.0/0", secret=Secret("radsec"))
    return build_client(rc, RadiusConfig(), RadiusDictionary())


def _rule(name: str, **kw: object) -> CertRule:
    fields: dict[str, object] = {
        "ca_fingerprints": frozenset(),
        "subject": None,
        "sans": frozenset(),
        "fingerprints": frozenset(),
    }
    fields.update(kw)
    return CertRule(client=_client(name), **fields)  # type: ignore[arg-type]


def test_subject_matches_in_either_rdn_order(world: RadsecWorld) -> None:
    """RFC 4514 order and openssl's print order name the same subject."""
    for text in ("CN=nas-tls.example.org,O=Example", "O=Example,CN=nas-tls.example.org"):
        rule = _rule("nas", subject=certmatch.parse_subject(text))
        assert certmatch.match([rule], [world.nas.cert, world.ca.cert]) is rule.client
    other = _rule("x", subject=certmatch.parse_subject("CN=nas-tls.example.org"))
    assert certmatch.match([other], [world.nas.cert]) is None  # O= is part of the subject


def test_san_and_fingerprint_rules(world: RadsecWorld) -> None:
    """A SAN rule matches a DNS name case-insensitively; a fingerprint names one
    certificate only; all given rules must hold."""
    by_san = _rule("p", sans=frozenset({certmatch.parse_san("DNS:PROXY.example.org")}))
    assert certmatch.match([by_san], [world.proxy.cert]) is by_san.client
    assert certmatch.match([by_san], [world.nas.cert]) is None
    fp = certmatch.parse_fingerprint(
        ":".join(world.nas.fingerprint[i : i + 2] for i in range(0, 64, 2))
    )
    by_fp = _rule("n", fingerprints=frozenset({fp}))
    assert certmatch.match([by_fp], [world.nas.cert]) is by_fp.client
    assert certmatch.match([by_fp], [world.stranger.cert]) is None
    both = _rule("b", fingerprints=frozenset({fp}), sans=by_san.sans)
    assert certmatch.match([both], [world.nas.cert]) is None


def test_client_ca_rule_needs_that_ca_in_the_chain(world: RadsecWorld) -> None:
    """A client bound to one CA is not matched by a chain through another."""
    subject = certmatch.parse_subject("CN=nas-tls.example.org,O=Example")
    other_ca = frozenset({certmatch.sha256(world.other_ca.cert)})
    rule = _rule("n", subject=subject, ca_fingerprints=other_ca)
    assert certmatch.match([rule], [world.nas.cert, world.ca.cert]) is None
    assert certmatch.match([rule], [world.foreign.cert, world.other_ca.cert]) is rule.client


def test_first_matching_entry_wins(world: RadsecWorld) -> None:
    """Entries are tried in config order."""
    subject = certmatch.parse_subject("CN=nas-tls.example.org,O=Example")
    first, second = _rule("first", subject=subject), _rule("second", subject=subject)
    assert certmatch.match([first, second], [world.nas.cert]) is first.client
    assert certmatch.match([first], []) is None


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (certmatch.parse_san, "nas.example.org"),
        (certmatch.parse_san, "IP:not-an-ip"),
        (certmatch.parse_san, "X400:whatever"),
        (certmatch.parse_fingerprint, "abcd"),
        (certmatch.parse_fingerprint, "zz" * 32),
        (certmatch.parse_subject, "not a dn"),
    ],
)
def test_bad_rules_are_refused(parse: object, text: str) -> None:
    """Malformed rules are configuration errors, never silently ignored."""
    with pytest.raises(RuleError):
        parse(text)  # type: ignore[operator]
