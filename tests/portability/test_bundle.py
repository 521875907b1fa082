"""The bundle file: sealed and opened under a passphrase or a key file; a wrong
secret, a changed header, a flipped bit or a cut-off file is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authd.core.errors import InvalidInput
from authd.portability.bundle import BundleError, Protector, Sealer, open_bundle

PASSPHRASE = "a long bundle passphrase"


def sealed(protector: Protector) -> bytes:
    sealer = Sealer.new(protector)
    return sealer.seal({"version": 1, "seed": sealer.seeds.wrap("S1", b"s" * 20)})


def test_passphrase_round_trip_and_seed_stays_wrapped() -> None:
    """The payload comes back; the seed inside is wrapped and bound to its serial."""
    data = sealed(Protector.from_passphrase(PASSPHRASE))
    assert b"s" * 20 not in data and PASSPHRASE.encode() not in data
    payload, seeds = open_bundle(data, Protector.from_passphrase(PASSPHRASE))
    assert seeds.unwrap("S1", payload["seed"]) == b"s" * 20
    with pytest.raises(BundleError, match="S2"):
        seeds.unwrap("S2", payload["seed"])


def test_key_file_round_trip_and_wrong_key(tmp_path: Path) -> None:
    """A 32-byte key file (raw, hex or base64, mode 0600) seals; another key file is
    named as such; a passphrase cannot open it."""
    key = tmp_path / "bundle.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    data = sealed(Protector.from_key_file(str(key)))
    open_bundle(data, Protector.from_key_file(str(key)))
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    with pytest.raises(BundleError, match="another key file"):
        open_bundle(data, Protector.from_key_file(str(other)))
    with pytest.raises(BundleError, match="key file"):
        open_bundle(data, Protector.from_passphrase(PASSPHRASE))


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """Like keys.json: a bundle key that group or others can read is refused."""
    key = tmp_path / "bundle.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        Protector.from_key_file(str(key))


def test_short_passphrase_is_refused() -> None:
    """A passphrase under 12 characters is too weak to seal seeds under."""
    with pytest.raises(InvalidInput, match="at least 12"):
        Protector.from_passphrase("short")


@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_any_changed_byte_is_refused(where: str) -> None:
    """A byte changed in the header (associated data), the ciphertext or the tag fails
    authentication (or the header parse): nothing comes out."""
    data = bytearray(sealed(Protector.from_passphrase(PASSPHRASE)))
    header_end = data.index(b"\n", len(b"authd-bundle\n"))
    at = {"header": data.index(b'"nonce"') + 10, "body": header_end + 5, "tag": len(data) - 1}[
        where
    ]
    data[at] ^= 0x01
    with pytest.raises(BundleError):
        open_bundle(bytes(data), Protector.from_passphrase(PASSPHRASE))


def test_truncated_and_wrong_passphrase_are_refused() -> None:
    """A cut-off bundle and a wrong passphrase fail the same authentication check."""
    data = sealed(Protector.from_passphrase(PASSPHRASE))
    for cut in (len(data) - 1, len(data) // 2, 20):
        with pytest.raises(BundleError):
            open_bundle(data[:cut], Protector.from_passphrase(PASSPHRASE))
    with pytest.raises(BundleError, match="wrong passphrase"):
        open_bundle(data, Protector.from_passphrase(PASSPHRASE + "!"))


def test_unknown_version_and_oversized_scrypt_are_refused() -> None:
    """A future format version is named; a header asking scrypt for absurd memory is
    refused before any work (a crafted file must not exhaust the host)."""
    data = sealed(Protector.from_passphrase(PASSPHRASE))
    with pytest.raises(BundleError, match="version 2"):
        open_bundle(
            data.replace(b'"version":1', b'"version":2', 1), Protector.from_passphrase(PASSPHRASE)
        )
    with pytest.raises(BundleError, match="scrypt parameters"):
        open_bundle(
            data.replace(b'"n":32768', b'"n":1073741824', 1), Protector.from_passphrase(PASSPHRASE)
        )
