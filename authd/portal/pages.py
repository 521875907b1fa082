"""The portal's HTML: Jinja2 templates (autoescaped) and the headers every page carries.

Every page is complete without JavaScript and pulls nothing from elsewhere: one local
style sheet, the QR code inlined as SVG. The headers refuse framing (clickjacking),
script of any origin, and caching (pages show secrets: seeds, backup codes).
"""

from __future__ import annotations

import functools
import gettext
import io
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2

# CSP Level 3: nothing but our own style sheet and forms; inline SVG is markup, not script.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CSP.encode()),
    (b"X-Frame-Options", b"DENY"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)

LANGUAGES = ("en", "de")  # English is the source text; each other one has locale/<lang>.po
DEFAULT_LANGUAGE = "en"


def _translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of `lang`, compiled from its .po file when first asked for (no
    compiled .mo files in the tree); English is the text itself."""
    if lang == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with resources.files("authd.portal").joinpath(f"locale/{lang}.po").open("rb") as po:
        catalog = read_po(po, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@functools.cache
def _environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("authd.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    translations = _translations(lang)
    # `_()` marks its result safe: it is used on the templates' own literal texts only.
    # Texts from code or config go through the `t` filter, which escapes.
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters["t"] = translations.gettext
    return env


def choose_language(accept_language: str) -> str:
    """The best of LANGUAGES for an Accept-Language header (RFC 9110 §12.5.4), else
    English."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in accept_language.split(",")[:20]:
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-", 1)[0]
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


@dataclass(frozen=True)
class Page:
    """An answer: HTML (or a static file), or a redirect when `location` is set."""

    body: bytes = b""
    status: int = 200
    content_type: bytes = b"text/html; charset=utf-8"
    location: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


def render(template: str, lang: str = DEFAULT_LANGUAGE, **context: Any) -> Page:
    """Fill `template` in `lang`; the context must name every variable it uses."""
    context.setdefault("user", "")
    context.setdefault("csrf", "")
    context.setdefault("error", "")
    context.setdefault("notice", "")
    context.setdefault("banner", "")
    context.setdefault("mailed", False)  # code.html: the code came by mail
    status = int(context.pop("status", 200))
    context["lang"] = lang
    body = _environment(lang).get_template(template).render(**context)
    return Page(body.encode("utf-8"), status, headers=((b"Content-Language", lang.encode()),))


def redirect(location: str) -> Page:
    """303 See Other: after a POST the browser GETs `location` (no resubmission)."""
    return Page(status=303, location=location)


def stylesheet() -> Page:
    data = resources.files("authd.portal").joinpath("static/portal.css").read_bytes()
    return Page(data, content_type=b"text/css; charset=utf-8")
