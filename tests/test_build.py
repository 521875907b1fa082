"""The suite runs against the build operators get: compiled where the machine can compile."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from authd import __version__, hot_path_build
from authd.metrics import Metrics

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


def test_typed_imports_cover_what_the_compiled_modules_import() -> None:
    """setup.py's TYPED_IMPORTS (checked at build time, and build requirements in
    pyproject.toml) name every third-party package a compiled module imports: one left
    out would be compiled against Any in a fresh venv."""
    setup = _setup_module()
    imported: set[str] = set()
    for path in setup.HOT_PATH:  # type: ignore[attr-defined]
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"authd", "__future__"}
    assert third_party == set(setup.TYPED_IMPORTS)  # type: ignore[attr-defined]


def test_build_info_metric_names_the_build() -> None:
    """An operator sees in /metrics which build answers (the compiled one is faster)."""
    labels = {"version": __version__, "hot_path": hot_path_build()}
    assert Metrics().registry.get_sample_value("authd_build_info", labels) == 1.0
