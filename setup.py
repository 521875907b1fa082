"""Build hook: compile the per-request hot path to C with mypyc (part of mypy).

The modules in HOT_PATH run for every RADIUS request. Compiled, a request costs 472k
instructions instead of 573k (callgrind, datagram to reply) and one core answers about
30% more requests per second (README, Performance). They stay plain, type-checked
Python: the compiler reads the annotations mypy already checks, so there is one source
and no C to maintain.

Compiling needs a C compiler and the Python headers (Debian: gcc, python3-dev). Where
they are missing, or with AUTHD_PURE=1, the same package is installed uncompiled and the
build says so; `authd serve` logs which one runs. Everything else is in setup.cfg.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup

# Measured with callgrind before joining the list. The SQL store and the config model
# are left out: they rely on runtime introspection (SQLAlchemy rows where a tuple is
# annotated, dataclass field types) that compiled code rejects.
HOT_PATH = [
    "authd/auth/interfaces.py",
    "authd/batching/batch.py",
    "authd/batching/threaded.py",
    "authd/core/backup_codes.py",
    "authd/core/errors.py",
    "authd/core/lockout.py",
    "authd/core/model.py",
    "authd/core/otp.py",
    "authd/core/pin.py",
    "authd/core/ratelimit.py",
    "authd/core/split.py",
    "authd/core/username.py",
    "authd/crypto.py",
    "authd/decision/attempt.py",
    "authd/decision/engine.py",
    "authd/decision/plan.py",
    "authd/decision/request.py",
    "authd/metrics.py",
    "authd/radius/clients.py",
    "authd/radius/codec.py",
    "authd/radius/dedup.py",
    "authd/radius/protocol.py",
    "authd/storage/hot_path.py",
]


# The third-party packages the HOT_PATH modules import. mypyc compiles against their
# types; where one cannot be imported at build time it would silently compile against
# Any instead (a fresh venv: setup.cfg's dependencies are installed after the build), so
# pyproject.toml lists them as build requirements and the build refuses without them.
TYPED_IMPORTS = ("cryptography", "prometheus_client", "psycopg", "pyrad", "sqlalchemy", "twisted")


def _why_not_compiled() -> str | None:
    """None when this machine can compile the hot path, else the reason it will not."""
    if os.environ.get("AUTHD_PURE") == "1":
        return "AUTHD_PURE=1 is set"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}); on Debian: apt-get install gcc"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers}); on Debian: apt-get install python3-dev"
    return None


def _ext_modules() -> list[Extension]:
    reason = _why_not_compiled()
    if reason is not None:
        print(f"authd: installing the pure-Python hot path: {reason}", file=sys.stderr)
        return []
    unseen = [name for name in TYPED_IMPORTS if importlib.util.find_spec(name) is None]
    if unseen:
        raise SystemExit(
            f"authd: cannot compile the hot path: {', '.join(unseen)} not importable at "
            "build time (pyproject.toml's build requirements; or set AUTHD_PURE=1)"
        )
    from mypyc.build import mypycify

    return mypycify(HOT_PATH, opt_level="3", group_name="authd")


if __name__ == "__main__":  # setuptools runs it so; tests import HOT_PATH and the check
    setup(ext_modules=_ext_modules())
