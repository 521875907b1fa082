"""Keyring: the key file's permissions and format, AES-GCM blobs, rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authd.core.errors import KeyFileError
from authd.crypto import Keyring

SEED = b"12345678901234567890"


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_created_file_is_0600_in_a_0700_dir_with_documented_format(tmp_path: Path) -> None:
    """First start creates the missing directories 0700 (the intermediate ones too) and
    the key file 0600 in the v1 format."""
    path = tmp_path / "etc" / "authd" / "keys.json"
    ring = Keyring.load_or_create(str(path))
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700  # every directory created on the way
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert doc["current"] == ring.current_key_id
    assert set(doc["keys"]) == {ring.current_key_id}
    assert len(base64.b64decode(doc["keys"][ring.current_key_id])) == 32
    assert base64.b64decode(doc["hash_key"]) == ring.hash_key
    assert len(ring.hash_key) == 32


def test_reload_gives_the_same_keys(tmp_path: Path) -> None:
    """A second load reads the existing file instead of minting new keys."""
    path = str(tmp_path / "keys.json")
    first = Keyring.load_or_create(path)
    blob = first.encrypt(SEED, b"T1")
    second = Keyring.load_or_create(path)
    assert second.current_key_id == first.current_key_id
    assert second.hash_key == first.hash_key
    assert second.decrypt(blob, b"T1") == SEED


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    """A key file readable by group/other is refused, naming the path and the fix."""
    path = tmp_path / "keys.json"
    Keyring.load_or_create(str(path))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        Keyring.load_or_create(str(path))
    assert str(path) in str(info.value)
    assert "chmod 600" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"{}",
        b'{"version": 2}',
        b'{"version": 1, "current": "a", "keys": {"a": "AAAA"}, "hash_key": "AAAA"}',
    ],
)
def test_refuses_a_corrupt_file(tmp_path: Path, content: bytes) -> None:
    """Garbage, an unknown version or short keys fail with KeyFileError, not a crash."""
    path = tmp_path / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError, match="keys.json"):
        Keyring.load_or_create(str(path))


def test_blob_format_and_round_trip(keyring: Keyring) -> None:
    """Blobs are v1:<key id>:<base64url(nonce+ct)>, fresh nonce each time."""
    a = keyring.encrypt(SEED, b"serial-1")
    b = keyring.encrypt(SEED, b"serial-1")
    assert a != b  # random nonce
    version, key_id, body = a.split(":", 2)
    assert (version, key_id) == ("v1", keyring.current_key_id)
    raw = base64.urlsafe_b64decode(body)
    assert len(raw) == 12 + len(SEED) + 16
    assert keyring.decrypt(a, b"serial-1") == SEED


def test_wrong_aad_is_refused_without_leaking(keyring: Keyring) -> None:
    """A seed moved to another serial's row does not decrypt; the error holds no secret."""
    blob = keyring.encrypt(SEED, b"serial-1")
    with pytest.raises(KeyFileError) as info:
        keyring.decrypt(blob, b"serial-2")
    assert SEED.decode() not in str(info.value)


def test_tampered_ciphertext_is_refused(keyring: Keyring) -> None:
    """Flipping any byte of nonce, ciphertext or tag fails the GCM tag check."""
    blob = keyring.encrypt(SEED, b"s")
    prefix, body = blob.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    for i in (0, 12, len(raw) - 1):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(KeyFileError):
            keyring.decrypt(f"{prefix}:{base64.urlsafe_b64encode(bytes(bad)).decode()}", b"s")
    for junk in ("", "v1", "v2:x:AAAA", "v1:nokey:AAAA", f"v1:{keyring.current_key_id}:!!"):
        with pytest.raises(KeyFileError):
            keyring.decrypt(junk, b"s")


def test_remembered_blobs_still_refuse_tampering_and_another_record(
    keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a blob was opened, the remembered plaintext is given for that exact blob and
    record only: a tampered copy or another record's aad still fails, and the memory is
    bounded (the oldest is forgotten first)."""
    monkeypatch.setattr("authd.crypto.OPENED_MAX", 3)
    blob = keyring.encrypt(SEED, b"serial-1")
    assert keyring.decrypt(blob, b"serial-1") == SEED
    assert keyring.decrypt(blob, b"serial-1") == SEED  # remembered
    prefix, body = blob.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 0x01
    with pytest.raises(KeyFileError):
        keyring.decrypt(f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode()}", b"serial-1")
    with pytest.raises(KeyFileError):
        keyring.decrypt(blob, b"serial-2")
    others = [keyring.encrypt(bytes([i]) * 20, b"x") for i in range(5)]
    assert [keyring.decrypt(b, b"x") for b in others] == [bytes([i]) * 20 for i in range(5)]
    assert len(keyring._opened) == 3  # bounded: the first ones made way


def test_rotate_keeps_old_blobs_readable_and_file_private(keyring: Keyring) -> None:
    """rotate() adds a current key, keeps the old ones and the hash key, rewrites 0600."""
    old_id, hash_key = keyring.current_key_id, keyring.hash_key
    old_blob = keyring.encrypt(SEED, b"s")
    new_id = keyring.rotate()
    assert new_id != old_id
    assert keyring.current_key_id == new_id
    assert keyring.hash_key == hash_key
    assert keyring.decrypt(old_blob, b"s") == SEED
    assert keyring.encrypt(SEED, b"s").startswith(f"v1:{new_id}:")
    assert _mode(keyring.path) == 0o600
    reloaded = Keyring.load_or_create(keyring.path)
    assert set(reloaded.key_ids) == {old_id, new_id}
    assert reloaded.current_key_id == new_id
    assert reloaded.decrypt(old_blob, b"s") == SEED
    leftovers = sorted(os.listdir(os.path.dirname(keyring.path)))
    assert leftovers in (["keys.json"], ["keys.json", "keys.json.lock"])  # no temp files


def test_a_running_process_learns_keys_rotated_elsewhere(keyring: Keyring) -> None:
    """The daemon decrypts seeds re-encrypted by `authctl key rotate` in another process."""
    other = Keyring.load_or_create(keyring.path)
    other.rotate()
    blob = other.encrypt(SEED, b"s")
    assert keyring.decrypt(blob, b"s") == SEED
    assert keyring.current_key_id == other.current_key_id
    # and a later rotation here keeps the key the other process added
    keyring.rotate()
    assert Keyring.load_or_create(keyring.path).decrypt(blob, b"s") == SEED


def test_repr_shows_no_key_material(keyring: Keyring) -> None:
    """Neither a data key nor the hash key appears in repr/str, in any encoding."""
    keyring.rotate()
    doc = json.loads(Path(keyring.path).read_text())
    secrets_b64 = [*doc["keys"].values(), doc["hash_key"]]
    text = repr(keyring) + str(keyring)
    for b64 in secrets_b64:
        raw = base64.b64decode(b64)
        assert b64 not in text
        assert raw.hex() not in text
        assert base64.urlsafe_b64encode(raw).decode() not in text


def test_concurrent_first_starts_agree_on_one_key_file(tmp_path: Path) -> None:
    """Eight processes-worth of first starts racing: all end up with the same keys, and
    none ever reads a half-written file."""
    path = str(tmp_path / "k" / "keys.json")
    barrier = threading.Barrier(8)

    def start(_: int) -> tuple[str, bytes]:
        barrier.wait(timeout=30)
        ring = Keyring.load_or_create(path)
        return ring.current_key_id, ring.hash_key

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = set(pool.map(start, range(8)))
    assert len(results) == 1
    assert _mode(path) == 0o600


def test_concurrent_rotations_lose_no_key(keyring: Keyring) -> None:
    """Two holders of the file rotating at once keep both new keys: every blob made
    under either stays decryptable from the file."""
    others = [Keyring.load_or_create(keyring.path) for _ in range(4)]
    barrier = threading.Barrier(4)

    def rotate(ring: Keyring) -> str:
        barrier.wait(timeout=30)
        ring.rotate()
        return ring.encrypt(SEED, b"s")

    with ThreadPoolExecutor(max_workers=4) as pool:
        blobs = list(pool.map(rotate, others))
    fresh = Keyring.load_or_create(keyring.path)
    assert len(fresh.key_ids) == 5
    for blob in blobs:
        assert fresh.decrypt(blob, b"s") == SEED


def test_uncreatable_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    """A path that cannot be created (parent is a file) fails as KeyFileError naming it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(KeyFileError, match="not-a-dir"):
        Keyring.load_or_create(str(blocker / "keys.json"))


def test_adopt_hash_key_persists_keeps_data_keys(keyring: Keyring) -> None:
    """Another site's hash key replaces ours in the file (0600), data keys untouched; a
    key of the wrong length is refused."""
    blob = keyring.encrypt(b"seed", b"S1")
    new = os.urandom(32)
    keyring.adopt_hash_key(new)
    reread = Keyring.load_or_create(keyring.path)
    assert reread.hash_key == new == keyring.hash_key
    assert reread.decrypt(blob, b"S1") == b"seed"
    assert stat.S_IMODE(os.stat(keyring.path).st_mode) == 0o600
    with pytest.raises(KeyFileError, match="32 bytes"):
        keyring.adopt_hash_key(b"short")
