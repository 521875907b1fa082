"""A user claims an imported, unassigned token by its serial and a code it shows.

What the self-service portal runs: proof of possession is one valid code, and the claim
uses that code in the same statement (compare-and-set), so it can never be replayed at
login. Every refusal reads the same: it must not tell whether the serial exists, is
taken, or the code was wrong.
"""

from __future__ import annotations

from typing import Protocol

from authd.config.model import OtpConfig
from authd.core import otp
from authd.core.errors import InvalidInput
from authd.core.model import Token, TokenStatus, TokenType

REFUSED = "no unassigned token with that serial accepts that code"


class RegistrationRefused(InvalidInput):
    """The serial and code do not make a claim (which part failed is not said)."""


class ClaimStore(Protocol):
    def get_token(self, serial: str) -> Token | None: ...

    def claim_token(
        self, serial: str, user: str, *, step: int | None, drift: int, counter: int | None
    ) -> bool: ...


class Registration:
    """`register_by_serial` over a store, with the OTP windows of the config."""

    def __init__(self, store: ClaimStore, config: OtpConfig) -> None:
        self._store = store
        self._config = config

    def register_by_serial(self, user: str, serial: str, code: str, now: float) -> Token:
        """Give the unassigned token `serial` to `user` if `code` is its current code
        (TOTP within otp.totp.skew, HOTP within otp.hotp.look_ahead); that code is used
        up. Raises RegistrationRefused otherwise, NotFound for an unknown user."""
        token = self._store.get_token(serial)
        if token is None or token.user is not None or token.status is not TokenStatus.ACTIVE:
            raise RegistrationRefused(REFUSED)
        if token.type is TokenType.TOTP:
            match = otp.match_totp(token, code, now, self._config.totp.skew)
            if match is None:
                raise RegistrationRefused(REFUSED)
            claimed = self._store.claim_token(
                serial, user, step=match.step, drift=match.drift, counter=None
            )
        else:
            counter = otp.match_hotp(token, code, self._config.hotp.look_ahead)
            if counter is None:
                raise RegistrationRefused(REFUSED)
            claimed = self._store.claim_token(
                serial, user, step=None, drift=token.drift, counter=counter
            )
        if not claimed:  # someone else claimed it, or used the code, meanwhile
            raise RegistrationRefused(REFUSED)
        claimed_token = self._store.get_token(serial)
        if claimed_token is None:  # pragma: no cover - deleted right after the claim
            raise RegistrationRefused(REFUSED)
        return claimed_token
