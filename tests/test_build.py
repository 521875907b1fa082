"""The suite runs against the build operators get: compiled where the machine can compile."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from authd import hot_path_build

ROOT = Path(__file__).resolve().parents[1]


def _setup_module() -> object:
    spec = importlib.util.spec_from_file_location("authd_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hot_path_is_compiled_where_it_can_be() -> None:
    """A machine with a C compiler and the Python headers gets (and tests) the compiled
    hot path; otherwise the reason is printed at install and the pure build runs."""
    setup = _setup_module()
    reason = setup._why_not_compiled()  # type: ignore[attr-defined]
    assert hot_path_build() == ("compiled" if reason is None else "pure Python"), reason


def test_every_listed_module_runs_in_the_same_build() -> None:
    """Each module in setup.py's HOT_PATH is an extension module in a compiled build and
    its source in a pure one: never a mix (a stale or partial build)."""
    setup = _setup_module()
    compiled = hot_path_build() == "compiled"
    for path in setup.HOT_PATH:  # type: ignore[attr-defined]
        name = path.removesuffix(".py").replace("/", ".")
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert spec.origin.endswith(".py") is not compiled, f"{name}: {spec.origin}"
