"""The key file: data keys that encrypt token seeds, and the hash key (pepper) for PINs
and backup codes.

File format (JSON, mode 0600)::

    {"version": 1, "current": "<id>", "keys": {"<id>": "<b64 32 bytes>"}, "hash_key": "<b64>"}

Ciphertexts are ``v1:<key id>:<base64url(nonce + ciphertext + tag)>`` (AES-256-GCM,
96-bit random nonce), so a rotated key set still decrypts every older record. The hash
key is never rotated: every stored PIN and backup-code hash depends on it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authd.core.errors import KeyFileError
from authd.statedir import make_private_dirs

FILE_VERSION = 1
BLOB_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
OPENED_MAX = 100_000  # opened blobs Keyring.decrypt remembers (~300 B each, ~30 MB at most)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, path: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: {what} is not a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyFileError(f"{path}: {what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyFileError(f"{path}: {what} must be {KEY_BYTES} bytes")
    return raw


def _new_key_id(taken: Mapping[str, object]) -> str:
    """Random, not sequential: two nodes rotating at once must not mint the same id."""
    while True:
        key_id = secrets.token_hex(4)
        if key_id not in taken:
            return key_id


class Keyring:
    """Data keys and hash key from one key file. Thread-safe: encrypt/decrypt read an
    immutable snapshot; `rotate` swaps the snapshot under a lock.
    """

    def __init__(self, path: str, current: str, keys: Mapping[str, bytes], hash_key: bytes):
        self._path = path
        self._lock = threading.Lock()
        self._hash_key = hash_key
        self._opened: dict[tuple[str, bytes], bytes] = {}  # see decrypt
        self._set_keys(current, keys)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_or_create(cls, path: str) -> Keyring:
        """Load the key file, or create it (0600, parent dir 0700) on first start.

        Refuses a file that group or others can read: the data key protects every seed.
        """
        path = os.path.abspath(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        parent = os.path.dirname(path)
        try:
            make_private_dirs(parent)
        except OSError as e:
            raise KeyFileError(f"{parent}: cannot create key directory: {e.strerror}") from None
        key_id = _new_key_id({})
        ring = cls(
            path, key_id, {key_id: secrets.token_bytes(KEY_BYTES)}, secrets.token_bytes(KEY_BYTES)
        )
        try:
            ring._write_atomically(create=True)
        except FileExistsError:
            # Another process created it first: use its keys, not ours.
            return cls._load(path)
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create key file: {e.strerror}") from None
        return ring

    @classmethod
    def check(cls, path: str) -> None:
        """Raise KeyFileError when an existing key file cannot be used (the checks
        `load_or_create` makes); a missing one is fine: the first start creates it."""
        with contextlib.suppress(FileNotFoundError):
            cls._read(os.path.abspath(path))

    @classmethod
    def _load(cls, path: str) -> Keyring:
        current, keys, hash_key = cls._read(path)
        return cls(path, current, keys, hash_key)

    @staticmethod
    def _read(path: str) -> tuple[str, dict[str, bytes], bytes]:
        """Parse and validate the file; raises FileNotFoundError when it does not exist."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise KeyFileError(f"{path}: cannot open key file: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(
                    f"{path}: key file is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); fix with: chmod 600 {path}"
                )
            raw = f.read()
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise KeyFileError(f"{path}: key file is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise KeyFileError(f"{path}: unsupported key file version (want {FILE_VERSION})")
        keys_doc = doc.get("keys")
        if not isinstance(keys_doc, dict) or not keys_doc:
            raise KeyFileError(f"{path}: key file has no data keys")
        keys = {str(k): _unb64(v, f"key {k!s}", path) for k, v in keys_doc.items()}
        current = doc.get("current")
        if current not in keys:
            raise KeyFileError(f"{path}: current key id is not among the keys")
        hash_key = _unb64(doc.get("hash_key"), "hash_key", path)
        return str(current), keys, hash_key

    def _set_keys(self, current: str, keys: Mapping[str, bytes]) -> None:
        # One tuple so a reader never sees a current id without its key.
        ciphers = MappingProxyType({k: AESGCM(v) for k, v in keys.items()})
        self._state = (current, MappingProxyType(dict(keys)), ciphers)

    def _serialise(self) -> bytes:
        current, keys, _ = self._state
        doc = {
            "version": FILE_VERSION,
            "current": current,
            "keys": {k: _b64(v) for k, v in keys.items()},
            "hash_key": _b64(self._hash_key),
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")

    def _write_atomically(self, *, create: bool = False) -> None:
        """Temp file (0600, O_EXCL) + fsync, then rename over the old file, or link into
        place when creating (fails with FileExistsError if someone else won). Readers see
        the whole old file or the whole new one, never a torn or empty one."""
        parent = os.path.dirname(self._path)
        tmp = os.path.join(parent, f".{os.path.basename(self._path)}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._serialise())
                f.flush()
                os.fsync(f.fileno())
            if create:
                os.link(tmp, self._path)
            else:
                os.replace(tmp, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive across processes: two concurrent rotations must not each drop the
        key the other added (the key file itself is replaced, so lock a sidecar)."""
        fd = os.open(self._path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    # ------------------------------------------------------------------ public
    @property
    def path(self) -> str:
        return self._path

    @property
    def current_key_id(self) -> str:
        return self._state[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._state[1])

    @property
    def hash_key(self) -> bytes:
        """Pepper for PIN/backup-code HMACs; constant for the life of the file."""
        return self._hash_key

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        """AES-256-GCM under the current key; `aad` binds the blob to its record."""
        current, _, ciphers = self._state
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = ciphers[current].encrypt(nonce, plaintext, aad)
        return f"{BLOB_VERSION}:{current}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    @property
    def opened(self) -> int:
        """How many opened blobs `decrypt` remembers (at most OPENED_MAX)."""
        return len(self._opened)

    def decrypt(self, blob: str, aad: bytes) -> bytes:
        """Open a blob from `encrypt`. Raises KeyFileError on an unknown key id, a wrong
        `aad` or any tampering; the message never carries plaintext or key material.

        Opened blobs are remembered (bounded, oldest out first): every decision opens
        its user's seeds (~3 µs each), and a blob never changes (a new seed or key makes
        a new blob, a tampered one is another key here). Holding the plaintext costs no
        secrecy: this process holds the data keys that open every blob anyway."""
        key = (blob, aad)
        opened = self._opened.get(key)
        if opened is not None:
            return opened
        opened = self._open(blob, aad)
        with self._lock:
            if len(self._opened) >= OPENED_MAX:
                del self._opened[next(iter(self._opened))]
            self._opened[key] = opened
        return opened

    def _open(self, blob: str, aad: bytes) -> bytes:
        try:
            version, key_id, body = blob.split(":", 2)
        except ValueError:
            raise KeyFileError("ciphertext is malformed") from None
        if version != BLOB_VERSION:
            raise KeyFileError(f"ciphertext version {version!r} is not supported")
        cipher = self._state[2].get(key_id)
        if cipher is None:
            # Another process (authctl key rotate) may have added it since we loaded.
            self._reload()
            cipher = self._state[2].get(key_id)
            if cipher is None:
                raise KeyFileError(f"ciphertext names key id {key_id!r}, not in {self._path}")
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            raise KeyFileError("ciphertext is not valid base64") from None
        if len(raw) < NONCE_BYTES + 16:
            raise KeyFileError("ciphertext is too short")
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyFileError(
                f"ciphertext under key {key_id!r} failed authentication "
                "(tampered, or bound to another record)"
            ) from None

    def rotate(self) -> str:
        """Add a fresh data key, make it current, rewrite the file; returns its id.

        Re-reads the file first so keys another process added are kept, not lost.
        """
        with self._lock, self._file_lock():
            self._reload_locked()
            _, keys, _ = self._state
            key_id = _new_key_id(keys)
            new_keys = dict(keys)
            new_keys[key_id] = secrets.token_bytes(KEY_BYTES)
            self._set_keys(key_id, new_keys)
            self._write_atomically()
            return key_id

    def adopt_hash_key(self, hash_key: bytes) -> None:
        """Take another site's hash key (pepper), so PIN and backup-code hashes moved
        from there verify here. Only safe while no hash under the old key exists (the
        caller checks); running daemons keep the old one until they restart."""
        if len(hash_key) != KEY_BYTES:
            raise KeyFileError(f"a hash key is {KEY_BYTES} bytes")
        with self._lock, self._file_lock():
            self._reload_locked()
            self._hash_key = hash_key
            self._write_atomically()

    def _reload(self) -> None:
        with self._lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        try:
            current, keys, hash_key = self._read(self._path)
        except FileNotFoundError:
            raise KeyFileError(f"{self._path}: key file has disappeared") from None
        if not secrets.compare_digest(hash_key, self._hash_key):
            raise KeyFileError(f"{self._path}: hash_key changed under a running process")
        merged = dict(self._state[1])
        merged.update(keys)
        self._set_keys(current, merged)

    def __repr__(self) -> str:
        return (
            f"Keyring(path={self._path!r}, current={self.current_key_id!r}, "
            f"keys={len(self._state[1])})"
        )
