"""scripts/install: the venv, unit, config and state directory land where the unit
expects them, an existing config is kept, a second run changes nothing, and --dry-run
touches nothing. Installs into a temporary --root, never the real /etc."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install"
pytestmark = pytest.mark.integration


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(INSTALL), *args], capture_output=True, text=True,
                            timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    """--dry-run names every step, the real system's included, and creates nothing."""
    root = tmp_path / "root"
    out = _install("--dry-run", "--root", str(root)).stdout
    assert f"-m venv {root}/opt/authd/venv" in out
    assert f"install -d -m 0700 {root}/var/lib/authd" in out
    assert f"{root}/etc/systemd/system/authd.service" in out
    assert not root.exists()
    system = _install("--dry-run").stdout
    assert "useradd --system" in system or "= user authd exists" in system
    assert "chown authd:authd /var/lib/authd" in system
    assert "chown root:authd /etc/authd/authd.yaml" in system or "exists, kept" in system


def test_install_into_a_root_twice(tmp_path: Path) -> None:
    """A prefix install puts each piece in place with safe modes; the config passes
    check-config; run again, it keeps the operator's edited config."""
    wheels, tree = tmp_path / "wheels", tmp_path / "tree"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "var", "*.so", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(tree)],
                   env={**os.environ, "AUTHD_PURE": "1"}, check=True, timeout=240,
                   capture_output=True)
    [wheel] = wheels.glob("authd-*.whl")
    root = tmp_path / "root"
    args = ("--root", str(root), "--prefix", "/srv/authd", "--python", sys.executable,
            "--wheel", str(wheel), "--pip-option=--no-deps")
    _install(*args)

    venv = root / "srv/authd/venv"
    probe = "import importlib.metadata as m; print(m.version('authd'))"
    version = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True,
                             text=True, check=True, timeout=60).stdout.strip()
    assert version and (venv / "bin/authd").exists() and (venv / "bin/authctl").exists()
    unit = (root / "etc/systemd/system/authd.service").read_text()
    assert "ExecStart=/srv/authd/venv/bin/authd serve" in unit and "/opt/authd" not in unit
    config = root / "etc/authd/authd.yaml"
    assert _mode(config) == 0o640
    text = config.read_text()
    assert 'url: "sqlite:////var/lib/authd/authd.db"' in text
    assert "file: /var/lib/authd/keys.json" in text
    assert _mode(root / "var/lib/authd") == 0o700
    check = subprocess.run([sys.executable, "-m", "authd", "check-config", "-c", str(config)],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert check.returncode == 0, check.stderr

    config.write_text(text + "# edited by the operator\n")
    again = _install(*args).stdout
    assert "exists, kept" in again and "= venv /srv/authd/venv exists" in again
    assert config.read_text().endswith("# edited by the operator\n")
