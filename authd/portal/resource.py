"""The self-service portal at `/selfservice/<alias>/`: log-in, token enrollment, backup
codes, revocation, served by the HTTP listener (`HttpService.mount`).

The portal decides nothing itself: log-in goes through the same engine as RADIUS and
HTTP (first-factor chain, lockout, audit; frontend `portal`), in challenge mode so the
user gives the password first and the code second; every change goes through `AdminOps`
with `selfservice:<user>` as the actor, so it is audited like an operator's. Sessions
live in the store (`storage/sessions.py`) so that several nodes share them. Every form
carries a CSRF token: the session's, or before log-in a random one also held in a
SameSite=Strict cookie (double submit).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote

import segno
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from authd.admin import AdminOps
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.auth.local import LOCAL_SOURCE
from authd.config.model import Config, PinConfig, SelfServiceConfig, SmtpConfig
from authd.config.parse import listen_address
from authd.core import otp
from authd.core.errors import AlreadyExists, InvalidInput, NotFound, StoreUnavailable
from authd.core.model import Token, TokenStatus
from authd.portal import mailcode, recovery
from authd.portal.access import may_self_provision
from authd.portal.pages import (
    DEFAULT_LANGUAGE,
    SECURITY_HEADERS,
    Page,
    choose_language,
    redirect,
    render,
    stylesheet,
)
from authd.rest.clientaddr import Network, client_address, parse_networks
from authd.rest.ratelimit import Limits, user_key
from authd.storage.sessions import STAGE_IN, STAGE_LOGIN, Session, SqlSessions

log = Logger(namespace="authd.portal.resource")

Authenticate = Callable[[AuthRequest], Deferred[Decision]]
RunBlocking = Callable[..., Deferred[Any]]
# (smtp settings, to, subject, body): sends without blocking (mail.send_mail_async).
Mailer = Callable[[SmtpConfig, str, str, str], Deferred[Any]]
STAGE_MAIL = "mail"  # a log-in code was mailed; the session holds its hash

SESSION_COOKIE = b"authd_portal"
LOGIN_CSRF_COOKIE = b"authd_portal_login"
FRONTEND = "portal"
CLIENT = "selfservice"
GENERIC_FAILURE = "Sign-in failed. Check what you typed and try again."
# Fixed texts a redirect may name (never text taken from the request).
NOTICES = {
    "enrolled": "Your token is active. Use its codes from now on.",
    "revoked": "The token was revoked.",
    "expired": "That enrollment expired. Start again.",
    "signed_out": "You are signed out.",
    "pin_set": "Your PIN is set. Type it together with your code from now on.",
    "pin_removed": "Your PIN is removed.",
    "resynced": "Your token is realigned.",
    "replaced": "Your new token is active; the old one no longer works.",
    "registered": "The token is yours now. Use its codes from now on.",
    "password_set": "Your password is changed.",
    "profile_set": "Your details are saved.",
    "renamed": "Your user name is changed. Sign in with the new one from now on.",
}
REGISTER_REFUSED = "No unassigned token with that serial accepts that code."
PROFILE_FIELDS = ("email", "phone", "first_name", "last_name")
MAX_PROFILE_FIELD = 200
HISTORY_ROWS = 10
MAX_PENDING = 3  # unconfirmed enrollments a user may have at once
# The language of the request being handled (each request's coroutine runs in a copy of
# the context, so concurrent requests do not see each other's).
_LANG: ContextVar[str] = ContextVar("portal_language", default=DEFAULT_LANGUAGE)
_OPS: ContextVar[AdminOps | None] = ContextVar("portal_admin_ops", default=None)
_MAX_FIELDS = 16  # no portal form has more
# One address, no spaces or display name (RFC 5321 §4.1.2's Mailbox, loosely).
_EMAIL = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")
# Engine outcomes that mean "the service could not decide", not "wrong".
_OUTAGE = frozenset({Reason.BACKEND_DOWN, Reason.UNAVAILABLE})


@dataclass(frozen=True)
class PortalDeps:
    """What the portal works with, built by `app.py`."""

    config: SelfServiceConfig
    issuer: str
    authenticate: Authenticate
    admin: AdminOps
    sessions: SqlSessions
    run_blocking: RunBlocking
    seconds: Callable[[], float]  # the session clock
    limits: Limits
    pin: PinConfig = field(default_factory=PinConfig)
    proxies: tuple[Network, ...] = ()  # http.trusted_proxies: their X-Forwarded-For counts
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    mailer: Mailer | None = None  # None or no smtp.host: no log-in by mailed code


class _Refused(Exception):
    """Ends a request early with the page it carries."""

    def __init__(self, page: Page) -> None:
        super().__init__("refused")
        self.page = page


def _form(request: Any) -> dict[str, str]:
    """The urlencoded POST body, parsed once (the site leaves form parsing to us: the API
    speaks JSON only); first value per name; anything else is an empty form."""
    parsed: dict[str, str] | None = getattr(request, "portal_form", None)
    if parsed is not None:
        return parsed
    parsed = {}
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if request.method == b"POST" and kind == b"application/x-www-form-urlencoded":
        request.content.seek(0)
        body = request.content.read()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                              max_num_fields=_MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            pairs = []
        for name, value in pairs:
            parsed.setdefault(name, value)
    request.portal_form = parsed
    return parsed


def _field(request: Any, name: str) -> str:
    return _form(request).get(name, "").strip()


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two tokens, False when either is empty."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def _b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode("ascii").rstrip("=")


def _qr_svg(uri: str, serial: str) -> str:
    # Error correction M and a 4-module quiet zone (ISO/IEC 18004 §6.3.8) for phone cameras.
    return str(
        segno.make(uri, error="m").svg_inline(
            scale=4, border=4, omitsize=True, title=f"QR code for token {serial}"
        )
    )


class Portal:
    """Turns one request into one `Page`; all I/O through the injected callables."""

    def __init__(self, deps: PortalDeps) -> None:
        self.deps = deps
        self.base = f"/selfservice/{deps.config.alias}/"

    def prepare(self, config: Config) -> Callable[[], None]:
        """New settings from a reloaded config; the commit swaps them in at once. The
        alias stays (the URL users were given); sessions keep their ids."""
        if config.selfservice.alias != self.deps.config.alias:
            log.warn("selfservice.alias changed; that takes effect on restart")
        portal = replace(config.selfservice, alias=self.deps.config.alias)
        deps = replace(
            self.deps,
            config=portal,
            issuer=config.otp.issuer,
            pin=config.otp.pin,
            proxies=parse_networks(config.http.trusted_proxies),
            smtp=config.smtp,
        )

        def commit() -> None:
            self.deps.sessions.idle = portal.session_idle
            self.deps.sessions.absolute = portal.session_max
            self.deps = deps

        return commit

    # ------------------------------------------------------------ dispatch
    def serves(self, host: str, port: int) -> bool:
        """Whether the listener at local (host, port) serves the portal
        (`selfservice.listen`; empty: every HTTP listener)."""
        wanted = self.deps.config.listen
        if not wanted:
            return True
        for entry in wanted:
            want_host, want_port = listen_address(entry)
            if want_port == port and (
                want_host in (host, "0.0.0.0", "::")  # noqa: S104 (a wildcard bind)
            ):
                return True
        return False

    async def handle(self, request: Any) -> Page:
        local = request.getHost()
        if not self.serves(str(local.host), int(local.port)):
            return Page(b"Not found", 404, b"text/plain; charset=utf-8")
        _LANG.set(choose_language((request.getHeader(b"accept-language") or b"").decode(
            "latin-1")))
        _OPS.set(self.deps.admin.from_source(self._source(request)))
        postpath = [p.decode("utf-8", "replace") for p in request.postpath]
        if not postpath or postpath[0] != self.deps.config.alias:
            return self._not_found()
        if len(postpath) == 1:
            return redirect(self.base)
        rest = "/".join(postpath[1:])
        method = request.method.decode("ascii", "replace")
        try:
            return await self._route(request, method, rest)
        except _Refused as refused:
            return refused.page
        except StoreUnavailable:
            log.warn("portal: the store is unavailable")
            return self._message("The service is unavailable. Try again later.", 503)

    async def _route(self, request: Any, method: str, rest: str) -> Page:
        if rest == "static/portal.css" and method == "GET":
            return stylesheet()
        if rest in ("", "login") and method == "GET":
            session = await self._session(request, required=False)
            if session is not None and session.stage == STAGE_IN:
                return await self._home(request, session)
            if session is not None and session.stage == STAGE_LOGIN:
                return self._render("code.html", None, csrf=session.csrf)
            if session is not None and session.stage == STAGE_MAIL:
                return self._render("code.html", None, csrf=session.csrf, mailed=True)
            return self._login_page(request)
        if rest == "recover" and method == "GET":
            return recovery.recover_page(self, request)
        posts: dict[str, Callable[[Any], Awaitable[Page]]] = {
            "login": self._login,
            "code": self._code,
            "logout": self._logout,
            "mail": self._mail_code,
            "mailcode": self._mailed_code,
            "recover": lambda request: recovery.recover(self, request),
        }
        actions: dict[str, Callable[[Any, Session], Awaitable[Page]]] = {
            "enroll": self._enroll,
            "backup_codes": self._backup_codes,
            "revoke": self._revoke,
            "pin": self._pin,
            "resync": self._resync,
            "register": self._register,
            "password": self._password,
            "profile": self._profile,
            "login_name": self._login_name,
        }
        if method == "POST" and rest in posts:
            return await posts[rest](request)
        if rest.startswith("enroll/") and rest.count("/") == 1:
            session = await self._in_session(request)
            self._offered("enroll", session)
            serial = rest.split("/", 1)[1]
            if method == "GET":
                return await self._pending_page(request, session, serial)
            if method == "POST":
                self._check_csrf(request, session)
                return await self._confirm(request, session, serial)
        if method == "POST" and rest in actions:
            session = await self._in_session(request)
            self._check_csrf(request, session)
            self._offered(rest, session)
            return await actions[rest](request, session)
        return self._not_found()

    # ------------------------------------------------------------ sessions, CSRF
    async def _session(self, request: Any, *, required: bool) -> Session | None:
        raw = request.getCookie(SESSION_COOKIE)
        session = None
        if raw:
            session = await self.deps.run_blocking(
                self.deps.sessions.find, raw.decode("ascii", "replace"), self.deps.seconds()
            )
        if session is None and required:
            self._clear_cookie(request, SESSION_COOKIE)
            raise _Refused(self._login_page(request, "Your session ended. Please sign in.", 401))
        return session

    async def _in_session(self, request: Any) -> Session:
        session = await self._session(request, required=True)
        assert session is not None
        if session.stage != STAGE_IN:
            raise _Refused(self._login_page(request, "Please sign in.", 401))
        return session

    def _check_csrf(self, request: Any, session: Session) -> None:
        if not _same(_field(request, "csrf"), session.csrf):
            raise _Refused(self._message("This form expired. Go back, reload it and try again.",
                                         403, session=session))

    def _set_cookie(self, request: Any, name: bytes, value: str) -> None:
        request.addCookie(
            name, value.encode("ascii"), path=self.base.encode(), httpOnly=True,
            secure=bool(request.isSecure()), sameSite="strict",
        )

    def _clear_cookie(self, request: Any, name: bytes) -> None:
        request.addCookie(
            name, b"", path=self.base.encode(), httpOnly=True, secure=bool(request.isSecure()),
            sameSite="strict", max_age="0", expires="Thu, 01 Jan 1970 00:00:00 GMT",
        )

    def _offered(self, action: str, session: Session) -> None:
        """An action the operator switched off does not exist (404), as if never built."""
        if action not in self.deps.config.actions:
            raise _Refused(self._not_found())
        if action in ("enroll", "register") and not self._may_enroll(session):
            raise _Refused(self._message(self.deps.config.denied_message, 403, session=session))

    def _may_enroll(self, session: Session) -> bool:
        groups = self.deps.config.groups
        return may_self_provision(session.groups, groups.allow, groups.deny)

    # ------------------------------------------------------------ log-in, log-out
    def _login_page(self, request: Any, error: str = "", status: int = 200) -> Page:
        token = secrets.token_urlsafe(32)
        self._set_cookie(request, LOGIN_CSRF_COOKIE, token)
        notice = NOTICES.get(_query(request, "notice"), "")
        return self._render("login.html", None, csrf=token, error=error, notice=notice,
                            status=status, by_mail=self._mails())

    def _mails(self) -> bool:
        return self.deps.mailer is not None and bool(self.deps.smtp.host)

    def _throttled(self, user: str, source: str) -> bool:
        """The HTTP API's buckets and failure backoff, shared (`http.rate_limits`)."""
        limits, now = self.deps.limits, self.deps.seconds()
        key = user_key(user, source)
        return bool(
            limits.per_source.take(source, now)
            or limits.per_user.take(key, now)
            or limits.backoff.wait(key, now)
        )

    async def _login(self, request: Any) -> Page:
        cookie = (request.getCookie(LOGIN_CSRF_COOKIE) or b"").decode("ascii", "replace")
        if not _same(_field(request, "csrf"), cookie):
            return self._login_page(request, "This form expired. Please try again.", 403)
        user, password = _field(request, "user"), _field(request, "password")
        if not user or not password:
            return self._login_page(request, GENERIC_FAILURE, 401)
        source = self._source(request)
        if self._throttled(user, source):
            return self._login_page(request, "Too many attempts. Wait and try again.", 429)
        decision = await self.deps.authenticate(
            AuthRequest(user=user, password=password, frontend=FRONTEND, client=CLIENT,
                        source=source, first_factor="chain", otp_mode="challenge")
        )
        return await self._after_decision(request, decision, user_key(user, source))

    async def _code(self, request: Any) -> Page:
        # The challenge State is single-use: whatever the answer, this session is done.
        session = await self._last_step(request, STAGE_LOGIN)
        if isinstance(session, Page):
            return session
        source = self._source(request)
        try:
            state = base64.b64decode(session.state.encode("ascii"), validate=True)
        except (binascii.Error, ValueError):
            return self._login_page(request, GENERIC_FAILURE, 401)
        decision = await self.deps.authenticate(
            AuthRequest(user=session.user, password="", frontend=FRONTEND, client=CLIENT,
                        source=source, otp=_field(request, "code"), state=state,
                        first_factor="chain", otp_mode="challenge")
        )
        return await self._after_decision(request, decision, user_key(session.user, source))

    async def _last_step(self, request: Any, stage: str) -> Session | Page:
        """The session of a one-answer sign-in step (challenge, mailed code), ended now
        whatever the answer; or the Page that ends the request here."""
        session = await self._session(request, required=True)
        assert session is not None
        if session.stage != stage:
            return redirect(self.base)
        self._check_csrf(request, session)
        await self.deps.run_blocking(self.deps.sessions.end, session.id)
        self._clear_cookie(request, SESSION_COOKIE)
        if self._throttled(session.user, self._source(request)):
            return self._login_page(request, "Too many attempts. Wait and try again.", 429)
        return session

    async def _mail_code(self, request: Any) -> Page:
        """Mail a one-time code to a user without a password. The answer is the same
        whether or not the account may have one (no user enumeration), and comes at
        once: the mail goes out on its own."""
        cookie = (request.getCookie(LOGIN_CSRF_COOKIE) or b"").decode("ascii", "replace")
        if not self._mails():
            return self._not_found()
        if not _same(_field(request, "csrf"), cookie):
            return self._login_page(request, "This form expired. Please try again.", 403)
        user = _field(request, "user")
        if not user:
            return self._login_page(request, GENERIC_FAILURE, 401)
        if self._throttled(user, self._source(request)):
            return self._login_page(request, "Too many attempts. Wait and try again.", 429)
        address: str = await self.deps.run_blocking(self._ops.mail_code_address, user)
        code = mailcode.new_code()  # an account without an address gets one nobody sees
        sealed = await self.deps.run_blocking(mailcode.seal, code, self.deps.seconds())
        session = await self._start_session(request, user, STAGE_MAIL, sealed, ())
        if address:
            self._send_code(address, code)
        return self._render("code.html", None, csrf=session.csrf, mailed=True)

    def _send_code(self, address: str, code: str) -> None:
        assert self.deps.mailer is not None
        minutes = int(mailcode.CODE_TTL // 60)
        body = (f"Your sign-in code for {self.deps.issuer}: {code}\n\n"
                f"It works once, for {minutes} minutes, in the browser where you asked "
                "for it. If you did not ask for it, ignore this mail.\n")
        sent = self.deps.mailer(self.deps.smtp, address, f"{self.deps.issuer} sign-in code",
                                body)
        # The reason names the error class only: never the code or an SMTP password.
        sent.addErrback(lambda f: log.warn("portal: a sign-in code was not mailed: {why}",
                                           why=f.getErrorMessage()))

    async def _mailed_code(self, request: Any) -> Page:
        # One answer per mailed code: whatever it is, this session is done.
        session = await self._last_step(request, STAGE_MAIL)
        if isinstance(session, Page):
            return session
        key = user_key(session.user, self._source(request))
        right: bool = await self.deps.run_blocking(
            mailcode.matches, session.state, _field(request, "code"), self.deps.seconds()
        )
        groups = await self.deps.run_blocking(
            self._ops.record_code_login, f"{FRONTEND}:{CLIENT}", session.user, CLIENT, right
        )
        if groups is None:
            self.deps.limits.backoff.failure(key, self.deps.seconds())
            return self._login_page(request, GENERIC_FAILURE, 401)
        self.deps.limits.backoff.success(key)
        return await self._start(request, session.user, STAGE_IN, "", groups)

    async def _after_decision(self, request: Any, decision: Decision, key: str) -> Page:
        limits = self.deps.limits
        if decision.reason in _OUTAGE:
            return self._message("The service is unavailable. Try again later.", 503)
        # NO_TOKEN: the password was right and the user has no active token yet (a
        # pending one never counts): they sign in to enroll one.
        if decision.outcome is Outcome.ACCEPT or decision.reason is Reason.NO_TOKEN:
            if not await recovery.admitted(self, decision):
                return self._login_page(request, GENERIC_FAILURE, 401)
            limits.backoff.success(key)
            return await self._start(request, decision.user, STAGE_IN, "", decision.groups)
        if decision.outcome is Outcome.CHALLENGE and decision.state is not None:
            state = base64.b64encode(decision.state).decode("ascii")
            session = await self._start_session(request, decision.user, STAGE_LOGIN, state,
                                                decision.groups)
            return self._render("code.html", None, csrf=session.csrf)
        if decision.reason is not Reason.BAD_REQUEST:
            limits.backoff.failure(key, self.deps.seconds())
        return self._login_page(request, GENERIC_FAILURE, 401)

    async def _start_session(self, request: Any, user: str, stage: str, state: str,
                             groups: tuple[str, ...]) -> Session:
        """A new session id for every step of the log-in (no fixation)."""
        old = request.getCookie(SESSION_COOKIE)
        if old:
            await self.deps.run_blocking(self.deps.sessions.end, old.decode("ascii", "replace"))
        session: Session = await self.deps.run_blocking(
            self.deps.sessions.create, user, stage, self.deps.seconds(), state, groups
        )
        self._set_cookie(request, SESSION_COOKIE, session.id)
        self._clear_cookie(request, LOGIN_CSRF_COOKIE)
        return session

    async def _start(self, request: Any, user: str, stage: str, state: str,
                     groups: tuple[str, ...]) -> Page:
        await self._start_session(request, user, stage, state, groups)
        return redirect(self.base)

    async def _logout(self, request: Any) -> Page:
        session = await self._session(request, required=True)
        assert session is not None
        self._check_csrf(request, session)
        await self.deps.run_blocking(self.deps.sessions.end, session.id)
        self._clear_cookie(request, SESSION_COOKIE)
        return redirect(self.base + "login?notice=signed_out")

    @property
    def _ops(self) -> AdminOps:
        """The operator actions for this request: audit rows name the user's address."""
        return _OPS.get(None) or self.deps.admin

    def _source(self, request: Any) -> str:
        """The client's address, through trusted proxies as the HTTP API reads it."""
        peer = str(request.getClientAddress().host)
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
        return client_address(peer, forwarded, self.deps.proxies)

    # ------------------------------------------------------------ pages and actions
    def _actor(self, session: Session) -> str:
        return f"selfservice:{session.user}"

    def _render(self, template: str, session: Session | None, **context: Any) -> Page:
        return render(template, _LANG.get(), **{**self._common(session), **context})

    def _common(self, session: Session | None = None) -> dict[str, Any]:
        return {
            "base": self.base,
            "issuer": self.deps.issuer,
            "user": session.user if session is not None and session.stage == STAGE_IN else "",
            "csrf": session.csrf if session is not None else "",
        }

    async def _home(
        self, request: Any, session: Session, error: str = "", status: int = 200
    ) -> Page:
        cfg = self.deps.config
        try:
            detail = await self.deps.run_blocking(
                self._ops.show_user, self._actor(session), session.user
            )
            tokens, codes_left, has_pin = detail.tokens, detail.backup_codes_left, detail.has_pin
            local, has_password = detail.source == LOCAL_SOURCE, detail.has_password
            profile = {k: getattr(detail, k) or "" for k in PROFILE_FIELDS}
        except NotFound:  # a directory user the store has not recorded yet
            tokens, codes_left, has_pin = (), 0, False
            local, has_password, profile = False, False, dict.fromkeys(PROFILE_FIELDS, "")
        history = []
        if "history" in cfg.actions:
            page = await self.deps.run_blocking(
                self._ops.audit, self._actor(session), session.user, None, 4 * HISTORY_ROWS
            )
            history = [
                {
                    "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.at)),
                    "source": e.source or "-",
                    "via": e.actor,
                    "result": _shown_result(e.actor, e.result, e.reason),
                }
                for e in page.events
                if e.action == "auth"
            ][:HISTORY_ROWS]
        now = self.deps.seconds()
        shown = [
            t for t in tokens
            if t.status in (TokenStatus.ACTIVE, TokenStatus.DISABLED)
            or (t.status == TokenStatus.PENDING and now - t.created_at <= cfg.pending_ttl)
        ]
        return self._render("home.html", session,
            tokens=shown,
            actions=cfg.actions,
            may_enroll=self._may_enroll(session),
            denied_message=cfg.denied_message,
            token_types=cfg.token_types,
            codes_left=codes_left,
            has_pin=has_pin,
            local=local,
            has_password=has_password,
            profile=profile,
            pin_min=self.deps.pin.min_length,
            pin_max=self.deps.pin.max_length,
            resyncable=[t for t in tokens if t.status == TokenStatus.ACTIVE],
            history=history,
            banner=self._banner(session, tokens),
            notice=NOTICES.get(_query(request, "notice"), ""),
            error=error,
            status=status,
        )

    def _banner(self, session: Session, tokens: Any) -> str:
        """Shown until the user has an active token (a pending one does not count)."""
        if any(t.status == TokenStatus.ACTIVE for t in tokens):
            return ""
        if "enroll" in self.deps.config.actions and self._may_enroll(session):
            return "Your account has no second factor yet. Enroll a token below to protect it."
        return "Your account has no second factor yet."

    async def _enroll(self, request: Any, session: Session) -> Page:
        kind = _field(request, "type")
        if kind not in self.deps.config.token_types:
            return await self._home(request, session, "Choose a kind of token.", 400)
        replaces = _field(request, "replaces")
        if replaces and not await self._owns_active(session, replaces):
            return self._not_found(session)
        pending = await self.deps.run_blocking(
            self._ops.expire_pending, self._actor(session), session.user,
            self.deps.config.pending_ttl, self.deps.seconds(),
        )
        if pending >= MAX_PENDING:  # each enrollment is a stored seed: bound them
            return await self._home(
                request, session, "Finish your other enrollments first, or wait until they "
                "expire.", 429)
        added = await self.deps.run_blocking(
            self._ops.add_token, self._actor(session), session.user, kind,
            status=TokenStatus.PENDING,
        )
        where = self.base + "enroll/" + quote(added.token.serial, safe="")
        return redirect(where + ("?replaces=" + quote(replaces, safe="") if replaces else ""))

    async def _owns_active(self, session: Session, serial: str) -> bool:
        token: Token | None = await self.deps.run_blocking(
            self._ops.active_token_of, session.user, serial
        )
        return token is not None

    async def _own_pending(self, session: Session, serial: str) -> Token:
        token: Token | None = await self.deps.run_blocking(
            self._ops.pending_token, session.user, serial
        )
        if token is None:
            raise _Refused(self._not_found(session))
        if self.deps.seconds() - token.created_at > self.deps.config.pending_ttl:
            raise _Refused(redirect(self.base + "?notice=expired"))
        return token

    async def _pending_page(self, request: Any, session: Session, serial: str,
                            error: str = "", status: int = 200) -> Page:
        token = await self._own_pending(session, serial)
        uri = otp.otpauth_uri(token, session.user, self.deps.issuer)
        return self._render("enroll.html", session,
            serial=token.serial,
            uri=uri,
            qr_svg=_qr_svg(uri, token.serial) if self.deps.config.show_qr else "",
            enroll_message=self.deps.config.enroll_message,
            replaces=_query(request, "replaces") or _field(request, "replaces"),
            secret=_b32(token.seed),
            kind=str(token.type),
            digits=token.digits,
            period=token.period if token.type == "totp" else 0,
            algorithm=str(token.algorithm),
            error=error,
            status=status,
        )

    async def _confirm(self, request: Any, session: Session, serial: str) -> Page:
        await self._own_pending(session, serial)
        try:
            await self.deps.run_blocking(
                self._ops.confirm_token, self._actor(session), session.user, serial,
                _field(request, "code"), self.deps.config.pending_ttl,
            )
        except InvalidInput:
            return await self._pending_page(
                request, session, serial, "That code is not right. Type the code the app "
                "shows now.", 400)
        except NotFound:
            return self._not_found(session)
        # Replacing: the old token stops working only now that the new one is verified.
        replaces = _field(request, "replaces")
        if replaces and await self._owns_active(session, replaces):
            await self.deps.run_blocking(
                self._ops.revoke_token, self._actor(session), replaces
            )
            return redirect(self.base + "?notice=replaced")
        return redirect(self.base + "?notice=enrolled")

    async def _backup_codes(self, request: Any, session: Session) -> Page:
        made = await self.deps.run_blocking(
            self._ops.generate_backup_codes, self._actor(session), session.user
        )
        text = "\n".join(made.codes) + "\n"
        return self._render("codes.html", session,
            codes=made.codes,
            download="data:text/plain;charset=utf-8," + quote(text),
        )

    async def _revoke(self, request: Any, session: Session) -> Page:
        serial = _field(request, "serial")
        owned = await self.deps.run_blocking(self._ops.owns_token, session.user, serial)
        if not owned:
            return self._not_found(session)
        await self.deps.run_blocking(self._ops.revoke_token, self._actor(session), serial)
        return redirect(self.base + "?notice=revoked")

    async def _pin(self, request: Any, session: Session) -> Page:
        if _field(request, "remove") == "1":
            await self.deps.run_blocking(
                self._ops.remove_pin, self._actor(session), session.user
            )
            return redirect(self.base + "?notice=pin_removed")
        new_pin = _form(request).get("pin", "")
        if not _same(new_pin, _form(request).get("pin2", "")):
            return await self._home(request, session, "The two PINs differ.", 400)
        try:
            await self.deps.run_blocking(
                self._ops.set_pin, self._actor(session), session.user, new_pin
            )
        except InvalidInput as refused:
            # The PIN policy's reasons name the rule, never the PIN (core/pin.py).
            return await self._home(request, session, str(refused), 400)
        return redirect(self.base + "?notice=pin_set")

    async def _resync(self, request: Any, session: Session) -> Page:
        serial = _field(request, "serial")
        owned = await self.deps.run_blocking(self._ops.owns_token, session.user, serial)
        if not owned:
            return self._not_found(session)
        try:
            await self.deps.run_blocking(
                self._ops.resync_token, self._actor(session), serial,
                _field(request, "otp1"), _field(request, "otp2"),
            )
        except InvalidInput:
            return await self._home(
                request, session, "Those are not two consecutive codes of this token.", 400
            )
        return redirect(self.base + "?notice=resynced")

    async def _register(self, request: Any, session: Session) -> Page:
        try:
            await self.deps.run_blocking(
                self._ops.register_token, self._actor(session), session.user,
                _field(request, "serial"), _field(request, "code"),
            )
        except (InvalidInput, NotFound):
            # One text for every refusal: it never tells whether the serial exists.
            return await self._home(request, session, REGISTER_REFUSED, 400)
        return redirect(self.base + "?notice=registered")

    async def _password(self, request: Any, session: Session) -> Page:
        """Set or change a local user's password; the current one, if any, is proved
        first (a session left open must not be enough to take the account over)."""
        try:
            detail = await self.deps.run_blocking(
                self._ops.show_user, self._actor(session), session.user
            )
        except NotFound:  # a directory user the store has not recorded yet
            detail = None
        if detail is None or detail.source != LOCAL_SOURCE:
            return self._message("Your password is kept elsewhere; change it there.", 403,
                                 session=session)
        form = _form(request)
        new, again = form.get("new_password", ""), form.get("new_password2", "")
        if not new or not _same(new, again):
            return await self._home(request, session, "The two new passwords differ.", 400)
        if detail.has_password:
            source = self._source(request)
            key = user_key(session.user, source)
            if self._throttled(session.user, source):
                return await self._home(request, session,
                                        "Too many attempts. Wait and try again.", 429)
            right = await self.deps.run_blocking(
                self._ops.check_password, session.user, form.get("password", "")
            )
            if not right:
                self.deps.limits.backoff.failure(key, self.deps.seconds())
                return await self._home(request, session,
                                        "Your current password is not right.", 400)
        try:
            await self.deps.run_blocking(
                self._ops.set_password, self._actor(session), session.user, new
            )
        except InvalidInput:
            return await self._home(request, session, "Choose another password.", 400)
        return redirect(self.base + "?notice=password_set")

    async def _profile(self, request: Any, session: Session) -> Page:
        given = {name: _field(request, name) for name in PROFILE_FIELDS}
        if any(len(v) > MAX_PROFILE_FIELD or not v.isprintable() for v in given.values()):
            return await self._home(request, session, "One of your details is too long or "
                                    "holds characters that cannot be kept.", 400)
        email = given["email"]
        if email and not _EMAIL.fullmatch(email):
            return await self._home(request, session, "That is not an e-mail address.", 400)
        try:
            await self.deps.run_blocking(
                functools.partial(self._ops.set_user, self._actor(session), session.user,
                                  **given)
            )
        except NotFound:
            return self._not_found(session)
        return redirect(self.base + "?notice=profile_set")

    async def _login_name(self, request: Any, session: Session) -> Page:
        """A local user's new user name; the session (moved with the rest) goes on."""
        try:
            await self.deps.run_blocking(
                self._ops.rename_user, self._actor(session), session.user,
                _field(request, "new_name"),
            )
        except AlreadyExists:
            return await self._home(request, session, "That user name is taken.", 409)
        except InvalidInput:
            return await self._home(request, session, "That user name cannot be used.", 400)
        return redirect(self.base + "?notice=renamed")

    def _message(self, heading: str, status: int, *, session: Session | None = None) -> Page:
        return self._render("message.html", session, heading=heading, status=status)

    def _not_found(self, session: Session | None = None) -> Page:
        return self._message("There is no such page.", 404, session=session)


def _query(request: Any, name: str) -> str:
    if request.method != b"GET":
        return ""
    values = (request.args or {}).get(name.encode(), [b""])
    return str(values[0].decode("ascii", "replace"))


def _shown_result(actor: str, result: str, reason: str) -> str:
    """The portal lets a user without an active token in on the password (to enroll);
    the engine records that as a NO_TOKEN reject, which users would misread."""
    if actor == f"{FRONTEND}:{CLIENT}" and reason == Reason.NO_TOKEN.value:
        return "accept (no token yet)"
    return result


class PortalResource(Resource):
    """The twisted.web face of `Portal`: runs `handle`, writes the page with the
    security headers, never lets an error escape into the reactor."""

    isLeaf = True

    def __init__(self, portal: Portal) -> None:
        super().__init__()
        self._portal = portal

    def prepare(self, config: Config) -> Callable[[], None]:
        """The portal's share of a reload (SIGHUP): its settings swap with the rest."""
        return self._portal.prepare(config)

    def render(self, request: Any) -> Any:
        d = Deferred.fromCoroutine(self._portal.handle(request))
        d.addErrback(self._failed)
        d.addCallback(self._write, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure) -> Page:
        log.failure("portal request failed", failure)
        return Page(b"Internal error", 500, b"text/plain; charset=utf-8")

    def _write(self, page: Page, request: Any) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(page.status)
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        for name, value in page.headers:
            request.setHeader(name, value)
        if page.location:
            request.setHeader(b"Location", page.location.encode("ascii"))
        request.setHeader(b"Content-Type", page.content_type)
        request.write(page.body)
        request.finish()
