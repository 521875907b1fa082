"""The settings change log: what a config load or reload puts in the audit trail.

A row says which config is in force (a SHA-256 digest of its settings) and, for a
reload, which keys changed, by path only (`radius.clients[0].secret`,
`otp.lockout.max_attempts`). No value is ever written, and secrets are not even hashed
into the digest: a digest over a short secret and otherwise known settings would let
anyone holding the trail test guesses of it. A changed secret is listed by path, which
is all an auditor needs ("the RADIUS secret of client 0 changed at 14:02").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from authd.config.model import Config, Secret
from authd.core.model import AuditEvent

MAX_PATHS = 40  # changed keys named in one row; more are counted
_SECRET = "<secret>"


def flatten(config: Config) -> dict[str, Any]:
    """{key path: value} over every YAML key (lists of sections by index); values as
    parsed, Secrets included (for comparison only: see `digest`)."""
    out: dict[str, Any] = {}
    _walk(config, "", out)
    return out


def _walk(node: Any, prefix: str, out: dict[str, Any]) -> None:
    for f in dataclasses.fields(node):
        if f.metadata.get("internal"):
            continue
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _walk(value, path + ".", out)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _walk(item, f"{path}[{i}].", out)
        else:
            out[path] = value


def _shown(path: str, value: Any) -> Any:
    """What the digest covers: secrets as a fixed marker, URLs without a password."""
    if isinstance(value, Secret):
        return _SECRET
    if isinstance(value, str) and path.endswith("url") and "@" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except ArgumentError:
            return _SECRET  # unparseable: show nothing of it
    if isinstance(value, tuple):
        return list(value)
    return value


def digest(flat: dict[str, Any]) -> str:
    """SHA-256 (hex) of the settings, secrets left out (see the module docstring)."""
    shown = {path: _shown(path, v) for path, v in flat.items()}
    canonical = json.dumps(shown, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Paths whose value differs, or that appear or vanish (a client added), sorted."""
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))


def load_event(config: Config, at: float, actor: str) -> AuditEvent:
    """`config.load`: the daemon started with this config."""
    detail = f"sha256={digest(flatten(config))} file={config.source}"
    return AuditEvent(at=at, actor=actor, action="config.load", result="ok", detail=detail)


def reload_event(old: Config, new: Config | None, at: float, actor: str) -> AuditEvent:
    """`config.reload`: ok with the new digest and the changed key paths, or error when
    the new file was refused (the old config stays in force; the log says why)."""
    if new is None:
        detail = f"sha256={digest(flatten(old))} kept"
        return AuditEvent(at, actor, "config.reload", "error", reason="refused", detail=detail)
    old_flat, new_flat = flatten(old), flatten(new)
    paths = changed_keys(old_flat, new_flat)
    named = ",".join(paths[:MAX_PATHS])
    more = f" (+{len(paths) - MAX_PATHS} more)" if len(paths) > MAX_PATHS else ""
    detail = f"sha256={digest(new_flat)} changed={named or '-'}{more}"
    return AuditEvent(at, actor, "config.reload", "ok", detail=detail)
