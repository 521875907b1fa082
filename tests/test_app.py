"""The composition root's own logic: the store URL it opens."""

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
