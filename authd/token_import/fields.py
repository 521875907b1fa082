"""The rules every imported token keeps, whatever file it came from."""

from __future__ import annotations

import re

from authd.core.errors import InvalidInput
from authd.core.model import Algorithm, Token, TokenType

# Serials travel in URIs, CLI arguments and audit lines: the same rule as `token add`.
SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
PERIOD_RANGE = (10, 300)
# RFC 4226 §4 R6: a shared secret of at least 128 bits.
MIN_SEED_BYTES = 16
MAX_SEED_BYTES = 128


class TokenFileError(InvalidInput):
    """A token file with problems; `problems` names each one by line or key package,
    never with a secret in it. Nothing of the file was imported."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__("token file refused, nothing imported:\n" + "\n".join(shown) + more)


def make_token(
    serial: str,
    seed: bytes,
    kind: str,
    *,
    digits: int = 6,
    period: int = 30,
    counter: int = 0,
    algorithm: str = "SHA1",
    drift: int = 0,
    now: float,
    user: str | None = None,
) -> Token:
    """An active token (unassigned unless `user`), or ValueError saying which field is
    wrong."""
    if not SERIAL_RE.match(serial):
        raise ValueError("serial must be 1-64 of A-Z a-z 0-9 . _ : -")
    try:
        token_type = TokenType(kind.strip().lower())
    except ValueError:
        raise ValueError(f"type must be totp or hotp, not {kind[:16]!r}") from None
    try:
        alg = Algorithm(algorithm.strip().upper())
    except ValueError:
        raise ValueError(
            f"algorithm must be SHA1, SHA256 or SHA512, not {algorithm[:16]!r}"
        ) from None
    if digits not in (6, 8):
        raise ValueError("digits must be 6 or 8")
    if not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES:
        raise ValueError(f"secret must be {MIN_SEED_BYTES}-{MAX_SEED_BYTES} bytes (RFC 4226 R6)")
    if token_type is TokenType.TOTP and not PERIOD_RANGE[0] <= period <= PERIOD_RANGE[1]:
        raise ValueError(f"period must be {PERIOD_RANGE[0]}-{PERIOD_RANGE[1]} seconds")
    if counter < 0 or counter >= 2**63:
        raise ValueError("counter must be 0 or more")
    return Token(
        serial=serial,
        type=token_type,
        seed=seed,
        user=user,
        algorithm=alg,
        digits=digits,
        period=period if token_type is TokenType.TOTP else 30,
        counter=counter if token_type is TokenType.HOTP else 0,
        drift=drift if token_type is TokenType.TOTP else 0,
        created_at=now,
    )


def check_unique(tokens: list[tuple[str, Token]]) -> list[str]:
    """Problems for serials that appear twice in one file; `where` names each place."""
    first: dict[str, str] = {}
    problems = []
    for where, token in tokens:
        seen = first.setdefault(token.serial, where)
        if seen != where:
            problems.append(f"{where}: serial {token.serial} also at {seen}")
    return problems
