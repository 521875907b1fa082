"""The portal's HTML: Jinja2 templates (autoescaped) and the headers every page carries.

Every page is complete without JavaScript and pulls nothing from elsewhere: one local
style sheet, the QR code inlined as SVG. The headers refuse framing (clickjacking),
script of any origin, and caching (pages show secrets: seeds, backup codes).
"""

from __future__ import annotations

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

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("authd.portal", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Page:
    """An answer: HTML (or a static file), or a redirect when `location` is set."""

    body: bytes = b""
    status: int = 200
    content_type: bytes = b"text/html; charset=utf-8"
    location: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


def render(template: str, **context: Any) -> Page:
    """Fill `template`; the context must name every variable the template uses."""
    context.setdefault("user", "")
    context.setdefault("csrf", "")
    context.setdefault("error", "")
    context.setdefault("notice", "")
    context.setdefault("banner", "")
    status = int(context.pop("status", 200))
    return Page(_env.get_template(template).render(**context).encode("utf-8"), status)


def redirect(location: str) -> Page:
    """303 See Other: after a POST the browser GETs `location` (no resubmission)."""
    return Page(status=303, location=location)


def stylesheet() -> Page:
    data = resources.files("authd.portal").joinpath("static/portal.css").read_bytes()
    return Page(data, content_type=b"text/css; charset=utf-8")
