"""Checks and keys of an incoming request, before any store or directory is asked."""

from __future__ import annotations

import hashlib
import re

from authd.auth.interfaces import AuthRequest
from authd.core.username import map_user_name

GENERIC_REJECT = "Authentication failed"
MAX_USER_LENGTH = 256
# RADIUS User-Password is at most 128 octets; HTTP bodies are bigger: refuse early
# anything no real password + PIN + code reaches, before it costs an argon2 or a bind.
MAX_SECRET_LENGTH = 1024
MAX_STATE_LENGTH = 256
# Unicode category Cc is exactly these 65 code points; one regex scan instead of a
# unicodedata lookup per character (request_problem runs on every request).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_FIRST_FACTORS = frozenset({"chain", "none"})
_OTP_MODES = frozenset({"inline", "challenge", "auto"})


def invalid_text(text: object, limit: int, control_ok: bool) -> bool:
    """Whether `text` is no string, longer than `limit`, or holds what no directory or
    hash should see (NUL, lone surrogates, controls unless `control_ok`)."""
    if not isinstance(text, str) or len(text) > limit:
        return True
    if text.isascii():
        # The usual case. ASCII holds no surrogate, and its only characters that are
        # not printable are the controls: one C call instead of a regex scan.
        return "\x00" in text if control_ok else not text.isprintable()
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")  # lone surrogates cannot reach a directory or a hash
    except UnicodeEncodeError:
        return True
    return not control_ok and _CONTROL.search(text) is not None


def request_problem(req: AuthRequest) -> str | None:
    """Why a request is malformed (safe to log: never quotes a field), or None."""
    if invalid_text(req.user, MAX_USER_LENGTH, False) or not req.user:
        return "invalid user name"
    if invalid_text(req.password, MAX_SECRET_LENGTH, True):
        return "invalid password field"
    if req.otp is not None and invalid_text(req.otp, MAX_SECRET_LENGTH, True):
        return "invalid otp field"
    if req.state is not None and (
        not isinstance(req.state, bytes) or not 0 < len(req.state) <= MAX_STATE_LENGTH
    ):
        return "invalid state"
    if req.first_factor not in _FIRST_FACTORS or req.otp_mode not in _OTP_MODES:
        return "invalid mode"
    for text in (req.frontend, req.client, req.source):
        if invalid_text(text, MAX_USER_LENGTH, False):
            return "invalid request metadata"
    return None


def state_hash(state: bytes) -> str:
    """Challenge states are stored by hash: a database reader cannot answer one."""
    return hashlib.sha256(state).hexdigest()


def store_key(req: AuthRequest) -> str | None:
    """The name a request's store reads start under: as typed, less surrounding spaces
    and its client's realms (a directory may name someone else after its search); None
    for a name that is no valid user name (the request is refused unread)."""
    typed = req.user
    if invalid_text(typed, MAX_USER_LENGTH, False) or not typed:
        return None
    return map_user_name(typed, req.realms) or typed
