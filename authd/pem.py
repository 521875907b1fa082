"""PEM files as the TLS listeners read them: the bytes, and the certificates inside.

Errors name the file and the OS reason, never the content (a key file's bytes must not
reach a log line).
"""

from __future__ import annotations

import re

PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def read(path: str, error: type[ValueError]) -> bytes:
    """The file's bytes; `error` naming the file when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None


def certificate_blocks(data: bytes) -> list[bytes]:
    """Every PEM certificate block in `data`, in file order."""
    return PEM_CERTIFICATE.findall(data)
