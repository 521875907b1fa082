"""The shared validation of check-config, serve and reload: what only building a part
finds (dictionary, reply attributes, API key files, TLS files, the key file) is reported
as `FILE:LINE: key.path: reason`, next to the YAML problems, without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from authd.config.errors import ConfigErrors
from authd.preflight import load

GOOD_KEY = "an-api-key-long-enough-0123456789"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "authd.yaml"
    path.write_text("store:\n  url: sqlite:///authd.db\nkeys:\n  file: keys.json\n" + body)
    return path


def private(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load(str(path))
    return [str(p) for p in caught.value.problems]


def test_good_file_passes(tmp_path: Path) -> None:
    """A file every part can build from loads, and nothing is created by checking it."""
    key = private(tmp_path / "k", GOOD_KEY)
    path = write(tmp_path, f"""\
radius:
  clients:
    - {{name: nas, address: 127.0.0.1/32, secret: a-long-enough-secret-123,
       reply_attributes: [{{group: "*", attribute: Class, value: staff}}]}}
http:
  api_keys: [{{name: vpn, key_file: {key}, scopes: [validate]}}]
""")
    assert load(str(path)).http.api_keys[0].name == "vpn"
    assert not (tmp_path / "keys.json").exists()


def test_every_part_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    """Unknown reply attribute, 8-byte key file, unusable TLS files and a key file
    readable by others: each named with the file, its line and key path, all at once."""
    short = private(tmp_path / "short.key", "8-bytes!")
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    keys = tmp_path / "keys.json"
    keys.write_text("{}")
    keys.chmod(0o644)
    path = write(tmp_path, f"""\
radius:
  clients:
    - name: nas
      address: 127.0.0.1/32
      secret: a-long-enough-secret-123
      reply_attributes: [{{group: "*", attribute: No-Such-Attr, value: x}}]
http:
  tls: {{cert_file: {cert}, key_file: {cert}}}
  api_keys:
    - name: vpn
      key_file: {short}
""")
    found = problems(path)
    assert found == [
        f"{path}:4: keys.file: {keys}: key file is accessible by group or others (mode 0644);"
        f" fix with: chmod 600 {keys}",
        f"{path}:7: radius.clients[0]: radius client nas: reply attribute 'No-Such-Attr' is"
        " not in the dictionary",
        f"{path}:12: http.tls: {cert}: no PEM certificate",
        f"{path}:14: http.api_keys[0]: api key 'vpn': {short} holds too short a key",
    ]
    assert not any("8-bytes!" in p or "a-long-enough-secret" in p for p in found)


def test_disabled_parts_are_not_built(tmp_path: Path) -> None:
    """A disabled front-end's settings are not checked: serve does not build them."""
    path = write(tmp_path, """\
radius:
  enabled: false
  clients:
    - {name: nas, address: 127.0.0.1/32, secret: s,
       reply_attributes: [{group: "*", attribute: No-Such-Attr, value: x}]}
""")
    assert load(str(path)).radius.enabled is False
