"""End to end in headless Chromium (Debian `chromium`, driven by Playwright's Python
client): a real `authd serve`, a user who enrolls a TOTP token by reading the secret off
the page, confirms it with a computed code, generates backup codes, signs out, signs in
again with a backup code, then authenticates with radclient using the new token. Once
with JavaScript and once without; every page photographed at phone and desktop size;
axe-core finds no serious or critical accessibility violation on any page."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authd.core.model import Algorithm
from authd.core.otp import totp
from tests.fixtures.radius import SECRET
from tests.integration.radius_peers import radclient
from tests.integration.test_daemon import Daemon, write_config
from tests.ports import free_ports

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORTS = {"phone": (375, 667), "desktop": (1280, 800)}
PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[2]
DAEMON_SECRET = "a-long-enough-test-secret"  # what write_config puts in


def artifacts() -> Path:
    """Screenshots go to $AUTHD_ARTIFACTS or tests/artifacts/ (ignored by git)."""
    root = Path(os.environ.get("AUTHD_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder = root / "portal"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`authd serve` with the portal on; user nora (password only). (http, radius) ports."""
    radius_port, http_port = free_ports(2)
    config = tmp_path / "authd.yaml"
    write_config(config, radius_port, http_port, f"""\
local_users:
  password_hash: {{time_cost: 1, memory_cost_kib: 8192, parallelism: 1}}
selfservice:
  enabled: true
  public_url: http://127.0.0.1:{http_port}/selfservice/default/
""")
    # radclient (tests/integration/radius_peers.py) speaks with the fixtures' secret.
    config.write_text(config.read_text().replace(DAEMON_SECRET, SECRET))
    done = subprocess.run(
        [sys.executable, "-m", "authd.authctl", "-c", str(config), "user", "add", "nora",
         "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    d = Daemon(config, tmp_path / "notify")
    try:
        assert d.next_state() == "READY=1"
        yield http_port, radius_port
    finally:
        d.close()
        assert d.proc.stdout is not None
        # The daemon's log, for a failure's post-mortem.
        (artifacts() / f"daemon-{tmp_path.name}.log").write_text(d.proc.stdout.read())


class Pages:
    """Screenshots and accessibility checks of every page the flow visits."""

    def __init__(self, page: Any, label: str, check_a11y: bool) -> None:
        self.page = page
        self.label = label
        self.check_a11y = check_a11y
        self.problems: list[str] = []

    def visit(self, name: str) -> None:
        for size, (width, height) in VIEWPORTS.items():
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=str(artifacts() / f"{self.label}-{name}-{size}.png"),
                                 full_page=True)
            self.no_horizontal_scroll(name, size)
        if self.check_a11y:
            from axe_playwright_python.sync_playwright import Axe

            for v in Axe().run(self.page).response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    self.problems.append(f"{name}: {v['id']} ({v['impact']})")

    def no_horizontal_scroll(self, name: str, size: str) -> None:
        if not self.check_a11y:
            return  # measuring needs script
        wide = self.page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        if wide:
            self.problems.append(f"{name}: scrolls sideways at {size}")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_enroll_backup_codes_and_radius_in_chromium(
    daemon: tuple[int, int], tmp_path: Path, javascript: bool
) -> None:
    """The whole user journey in a real browser, then the new token over RADIUS."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium not found: install the Debian package chromium")
    http_port, radius_port = daemon
    base = f"http://127.0.0.1:{http_port}/selfservice/default/"
    # Before: RADIUS rejects the user without a token and names the portal's address.
    rc, out = radclient(radius_port, "nora", PASSWORD, tmp_path)
    assert "Access-Reject" in out and f"Enrol a token at {base}" in out, out
    label = "js" if javascript else "nojs"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # axe-core is injected as script; the portal's CSP (rightly) forbids that.
            context = browser.new_context(java_script_enabled=javascript, bypass_csp=javascript)
            page = context.new_page()
            page.set_default_timeout(15_000)
            pages = Pages(page, label, check_a11y=javascript)

            page.goto(base)
            pages.visit("login")
            page.get_by_label("User name").fill("nora")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Continue").click()
            assert "no second factor yet" in page.content()
            pages.visit("home-new")

            page.get_by_role("button", name="Enroll").click()
            page.wait_for_url("**/enroll/*")
            pages.visit("enroll")
            secret = page.locator("#secret").inner_text().strip()
            seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
            page.get_by_label("Code shown by the app").fill(
                totp(seed, time.time(), 30, 6, Algorithm.SHA1)
            )
            page.get_by_role("button", name="Confirm").click()
            assert "Your token is active" in page.content()
            pages.visit("home-enrolled")

            page.get_by_role("button", name="Generate a new set").click()
            codes = [c.strip() for c in page.locator(".codes code").all_inner_texts()]
            assert len(codes) == 10
            pages.visit("backup-codes")
            page.get_by_role("link", name="Back to your tokens").click()
            page.get_by_role("button", name="Sign out").click()
            assert "You are signed out" in page.content()

            page.get_by_label("User name").fill("nora")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Continue").click()
            pages.visit("code")
            page.locator("#code").fill(codes[0])
            page.get_by_role("button", name="Sign in").click()
            assert "Signed in as" in page.content()
            assert "9 unused backup codes" in page.content()

            # Restore access: the sign-in page's link, the form, the queued answer.
            page.get_by_role("button", name="Sign out").click()
            page.get_by_role("link", name="Lost your token").click()
            pages.visit("recover")
            page.locator("#kind-token").check()
            page.locator("#user").fill("nora")
            page.locator("#password").fill(PASSWORD)
            page.get_by_role("button", name="Send request").click()
            assert "Your request is queued" in page.content()
            pages.visit("recover-queued")
            context.close()
        finally:
            browser.close()
    assert pages.problems == []
    code = totp(seed, time.time() + 30, 30, 6, Algorithm.SHA1)  # the next step: not a replay
    rc, out = radclient(radius_port, "nora", PASSWORD + code, tmp_path)
    assert rc == 0 and "Access-Accept" in out, out
