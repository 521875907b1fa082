"""The portal on the live HTTP test app (tests/rest/harness.py), and a small browser:
cookies kept per origin path, forms posted urlencoded, no redirect followed unasked."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet.defer import Deferred
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from authd.config.model import Config, SelfServiceConfig, SelfServiceGroups
from authd.mail import send_mail_async
from authd.portal.resource import Portal, PortalDeps, PortalResource
from authd.rest.clientaddr import parse_networks
from authd.storage.sessions import SqlSessions
from tests.rest.harness import App, BytesProducer, Response, make_config, start_app

BASE = "/selfservice/default/"


def portal_config(tmp: Path, **selfservice: Any) -> Config:
    config = make_config(tmp)
    return replace(config, selfservice=replace(SelfServiceConfig(enabled=True), **selfservice))


def mount_portal(app: App, config: Config | None = None) -> Portal:
    """Serve the portal on `app`'s listener, as app.py does; sessions on the app's store
    and clock."""
    whole = config or app.config
    cfg = whole.selfservice
    portal = Portal(
        PortalDeps(
            config=cfg,
            issuer="authd-test",
            authenticate=app.engine.authenticate,
            admin=app.admin,
            sessions=SqlSessions(app.store.transaction, cfg.session_idle, cfg.session_max),
            run_blocking=lambda f, *a, **k: _run_blocking(app, f, *a, **k),
            seconds=app.clock.seconds,
            limits=app.service.limits,
            pin=whole.otp.pin,
            proxies=parse_networks(whole.http.trusted_proxies),
            smtp=whole.smtp,
            mailer=lambda smtp, to, subject, body: send_mail_async(
                app.loop.reactor, smtp, to, subject, body),
        )
    )
    app.service.mount(b"selfservice", PortalResource(portal))
    return portal


def _run_blocking(app: App, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(app.loop.reactor, app.pool, f, *args, **kwargs)


def start_portal(tmp: Path, **selfservice: Any) -> App:
    app = start_app(tmp, portal_config(tmp, **selfservice))
    mount_portal(app)
    return app


@dataclass
class Browser:
    """Keeps the cookies the portal sets; `csrf` is the last form's token."""

    app: App
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request

    def get(self, path: str) -> Response:
        return self._go("GET", path, None)

    def post(self, path: str, fields: dict[str, str], *, csrf: bool = True) -> Response:
        body = dict(fields)
        if csrf and "csrf" not in body:
            body["csrf"] = self.csrf
        return self._go("POST", path, urlencode(body).encode())

    def _go(self, method: str, path: str, data: bytes | None) -> Response:
        if path.startswith("http://"):
            url = path
        else:
            url = self.app.base + (path if path.startswith("/") else BASE + path)
        headers: dict[bytes, list[bytes]] = {
            k.lower().encode(): [v.encode()] for k, v in self.headers.items()
        }
        if self.cookies:
            jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers[b"cookie"] = [jar.encode()]
        if data is not None:
            headers[b"content-type"] = [b"application/x-www-form-urlencoded"]

        async def go() -> Response:
            producer = BytesProducer(data) if data is not None else None
            # A bare Agent: treq's client keeps a cookie jar shared by every browser.
            agent = Agent(self.app.loop.reactor, pool=self.app.http_pool)
            resp = await agent.request(method.encode(), url.encode(), Headers(headers), producer)
            content = await treq.content(resp)
            got = {
                k.decode().lower(): [x.decode() for x in v]
                for k, v in resp.headers.getAllRawHeaders()
            }
            return Response(resp.code, got, content)

        response = self.app.loop.run(Deferred.fromCoroutine(go()))
        for line in response.headers.get("set-cookie", []):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in line:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        found = re.search(r'name="csrf" value="([^"]+)"', response.raw.decode())
        if found:
            self.csrf = found.group(1)
        return response

    def text(self, response: Response) -> str:
        return html.unescape(response.raw.decode())

    def log_in(self, user: str, password: str, code: str | None = None) -> Response:
        self.get("login")
        answer = self.post("login", {"user": user, "password": password})
        if code is not None:
            assert answer.status == 200, answer.status
            answer = self.post("code", {"code": code})
        return answer


__all__ = ["SelfServiceGroups"]
