"""authctl's QR codes: a terminal code in explicit colours with its quiet zone (scans on
light and dark themes), PNG/SVG files 0600, and a reader that leaves early."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import segno

from authd.ctl import qr
from tests.ctl.conftest import CONFIG, CtlEnv

URI = "otpauth://totp/authd:finn?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=authd"
SGR = re.compile(r"\x1b\[[0-9;]*m")
FROM_BLOCK = {" ": (False, False), "▀": (True, False), "▄": (False, True), "█": (True, True)}


def read_back(lines: list[str]) -> list[list[bool]]:
    """The modules a terminal shows for `lines` (dark = True), two rows per line."""
    grid: list[list[bool]] = []
    for line in lines:
        pairs = [FROM_BLOCK[ch] for ch in SGR.sub("", line)]
        grid += [[top for top, _ in pairs], [bottom for _, bottom in pairs]]
    return grid


def test_terminal_code_has_colours_quiet_zone_and_the_same_modules() -> None:
    """Every line sets dark-on-light itself and resets after; what it draws is segno's
    code module for module, with four light modules of quiet zone on every side."""
    lines = qr.terminal_lines(URI)
    assert all(line.startswith("\x1b[30;107m") and line.endswith("\x1b[0m") for line in lines)
    shown = read_back(lines)
    expected = [[bool(m) for m in row] for row in segno.make(URI, error="m").matrix_iter(border=4)]
    assert shown[: len(expected)] == expected
    assert all(not any(row) for row in shown[len(expected):])  # the padding row, if any
    size = len(expected)
    for row in shown[:4] + shown[size - 4 : size]:
        assert not any(row)
    assert not any(row[i] for row in shown for i in (*range(4), *range(size - 4, size)))


def test_token_add_qr_prints_the_coloured_code_after_the_uri(ctl_env: CtlEnv) -> None:
    """--secret keeps the operator's seed; --qr draws the terminal code after the URI."""
    assert ctl_env.run("user", "add", "finn").code == 0
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    run = ctl_env.run("token", "add", "finn", "--secret", secret, "--qr")
    assert run.code == 0 and f"secret={secret}" in run.out
    (uri,) = re.findall(r"otpauth://\S+", run.out)
    drawn = run.out.split(uri, 1)[1].strip("\n").splitlines()
    assert drawn == qr.terminal_lines(uri)


def test_qr_file_png_and_svg_are_0600_with_a_light_background(ctl_env: CtlEnv) -> None:
    """--qr-file writes PNG or SVG by extension, 0600 (it holds the secret), an opaque
    light background with the quiet zone; an existing file is narrowed to 0600 too."""
    assert ctl_env.run("user", "add", "finn").code == 0
    png = ctl_env.config.parent / "finn.png"
    png.write_bytes(b"old")
    png.chmod(0o644)
    run = ctl_env.run("--json", "token", "add", "finn", "--qr-file", str(png))
    assert run.code == 0, run.err
    modules = len(qr.modules(run.json()["otpauth_uri"]))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_mode & 0o777 == 0o600
    width, height = struct.unpack(">II", data[16:24])
    assert width == height == modules * 8
    svg = ctl_env.config.parent / "finn.svg"
    run = ctl_env.run("--json", "token", "add", "finn", "--qr-file", str(svg))
    assert run.code == 0, run.err
    assert svg.stat().st_mode & 0o777 == 0o600
    root = ET.fromstring(svg.read_text())  # noqa: S314 (our own file)
    assert root.tag.endswith("svg") and root.get("width") == str(
        len(qr.modules(run.json()["otpauth_uri"])) * 8)
    assert 'fill="#fff"' in svg.read_text()


def test_qr_file_with_another_extension_is_a_usage_error(ctl_env: CtlEnv) -> None:
    """A --qr-file that is neither .png nor .svg exits 2 before any token is made."""
    assert ctl_env.run("user", "add", "finn").code == 0
    run = ctl_env.run("token", "add", "finn", "--qr-file", str(ctl_env.config.parent / "x.jpg"))
    assert run.code == 2 and ".png or .svg" in run.err
    assert ctl_env.run("--json", "token", "list", "finn").json() == {"tokens": []}


def test_reader_leaving_early_is_not_a_traceback(tmp_path: Path) -> None:
    """`authctl token add ... --qr | head -1`: a closed stdout ends authctl quietly (no
    traceback, no 'Exception ignored'), the token made as asked."""
    config = tmp_path / "authd.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "db" / "authd.db"))
    authctl = [sys.executable, "-m", "authd.authctl", "-c", str(config)]
    env = dict(os.environ)
    subprocess.run([*authctl, "user", "add", "finn"], check=True, timeout=60, env=env,
                   capture_output=True)
    proc = subprocess.Popen([*authctl, "token", "add", "finn", "--qr"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before authctl writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
    listed = subprocess.run([*authctl, "token", "list", "finn"], capture_output=True,
                            text=True, timeout=60, env=env, check=True)
    assert "finn" in listed.stdout
