"""Every portal text comes from a gettext catalogue chosen by Accept-Language, with
English as the fallback; German ships complete."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from authd.portal import resource
from authd.portal.pages import choose_language
from tests.portal.harness import Browser
from tests.rest.harness import PASSWORD, App

TEMPLATES = Path(resource.__file__).parent / "templates"


def _german() -> set[str]:
    data = resources.files("authd.portal").joinpath("locale/de.po").read_bytes()
    catalog = read_po(io.BytesIO(data), locale="de")
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id and m.string}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "en"),
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7", "en"),
        ("fr, de;q=0.5", "de"),
        ("de;q=bad, en;q=0.1", "en"),
    ],
)
def test_language_follows_accept_language(header: str, expected: str) -> None:
    """The best supported language by q-value (RFC 9110 §12.5.4), else English."""
    assert choose_language(header) == expected


def test_every_template_text_has_a_german_translation() -> None:
    """The German catalogue covers every text the templates mark for translation."""
    found = {
        (msg if isinstance(msg, str) else msg[0])
        for _, _, msg, _, _ in extract_from_dir(
            str(TEMPLATES),
            method_map=[("**.html", "jinja2")],
            options_map={"**.html": {"extensions": "jinja2.ext.i18n"}},
        )
    }
    assert found and found - _german() == set()


def test_every_fixed_message_of_the_code_has_a_german_translation() -> None:
    """Notices and the generic failure, set in code, are in the catalogue too."""
    texts = {*resource.NOTICES.values(), resource.GENERIC_FAILURE}
    assert texts - _german() == set()


def test_pages_in_german_for_a_german_browser(app: App) -> None:
    """A German browser gets German pages; the failure stays generic in German too."""
    b = Browser(app, headers={"accept-language": "de-DE,de;q=0.9,en;q=0.5"})
    page = b.get("")
    assert page.header("content-language") == "de" and '<html lang="de">' in b.text(page)
    assert "Benutzername" in b.text(page) and "User name" not in b.text(page)
    failed = b.post("login", {"user": "nora", "password": "wrong"})
    assert "Anmeldung fehlgeschlagen" in b.text(failed)
    b.get("login")
    b.post("login", {"user": "nora", "password": PASSWORD})
    home = b.text(b.get(""))
    assert "Ihr Konto hat noch keinen zweiten Faktor" in home and "Abmelden" in home
