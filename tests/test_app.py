"""The composition root's own logic: the store URL it opens."""

import stat
from pathlib import Path

import pytest

from authd.app import _store_url
from authd.config.model import Secret, StoreConfig


def test_store_password_from_file_goes_into_the_url_only_when_set() -> None:
    """store.password (read from password_file) is filled into the PostgreSQL URL; a URL
    without one is opened exactly as written."""
    plain = StoreConfig(url="postgresql://authd@127.0.0.1:5432/authd")
    assert _store_url(plain) == plain.url
    with_password = StoreConfig(url=plain.url, password=Secret("p@ss/word"))
    url = _store_url(with_password)
    assert url.startswith("postgresql://authd:")
    assert url.endswith("@127.0.0.1:5432/authd")
    assert "p%40ss%2Fword" in url  # escaped, so the URL still parses
    assert "p@ss/word" not in repr(with_password)


def test_workers_share_metrics_through_a_directory_the_main_process_owns(
        tmp_path: Path) -> None:
    """With workers the main process exports the merged view over a fresh private
    directory, never one its own environment names (it deletes it at stop), hands that
    one to its workers, and removes it when the daemon stops."""
    from twisted.internet.testing import MemoryReactorClock

    from authd.app import build_service
    from authd.preflight import load
    from authd.worker_metrics import DIR_ENV, MergedView

    config_file = tmp_path / "authd.yaml"
    config_file.write_text(
        "store:\n  url: sqlite:///authd.db\nkeys:\n  file: keys.json\n"
        "radius:\n  workers: 2\n  listen: ['127.0.0.1:0']\nhttp:\n  listen: ['127.0.0.1:0']\n")
    victim = tmp_path / "not-ours"
    victim.mkdir()
    service = build_service(load(str(config_file)), MemoryReactorClock(),
                            environ={DIR_ENV: str(victim)})
    try:
        [view] = [part for part in service.listeners if isinstance(part, MergedView)]
        directory = Path(view.directory)
        assert directory != victim and stat.S_IMODE(directory.stat().st_mode) == 0o700
        supervisor = service.listeners[-1].service  # type: ignore[attr-defined]
        assert supervisor._environ[DIR_ENV] == str(directory)
        view.stopService()
        assert not directory.exists() and victim.is_dir()
    finally:
        service._close_store()


def test_signin_habits_hold_at_most_the_configured_users(tmp_path: Path) -> None:
    """audit.unusual_signin.max_users from the YAML bounds the habits table the core
    builds: past it, the least recently seen users go; a bound below 1 is refused."""
    from authd.app import build_core
    from authd.config.errors import ConfigErrors
    from authd.config.parse import load_config

    base = "store:\n  url: sqlite:///authd.db\nkeys:\n  file: keys.json\n"
    config_file = tmp_path / "authd.yaml"
    config_file.write_text(base + "audit:\n  unusual_signin:\n    max_users: 3\n")
    core = build_core(load_config(str(config_file)))
    try:
        assert core.habits is not None
        for i in range(10):
            core.habits.learn(f"user{i}", "10.0.0.1", "vpn", 1767258000.0)
        assert len(core.habits) == 3
    finally:
        core.close()
    config_file.write_text(base + "audit:\n  unusual_signin:\n    max_users: 0\n")
    with pytest.raises(ConfigErrors, match="max_users"):
        load_config(str(config_file))
