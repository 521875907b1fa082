"""Restore access: a user who cannot sign in says what they lost and proves who they are
with what remains; the portal queues a request for an operator (`authctl issue ...`).

What each kind asks for (the factor that remains):
- lost token: the password (the first factor passes; the code is what is missing);
- forgotten password: a current code or a backup code (second factor alone);
- lost mail address: password and code (both factors).
The proof goes through the same engine as every sign-in (lockout, rate limits, audit),
under its own client name so that the operator's "signed in since" check does not count
the proof itself as a normal sign-in. A failed proof says nothing of which part failed.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from authd.admin import DIRECTORY_PASSWORD
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.core.errors import InvalidInput
from authd.portal import resource as _r
from authd.rest.ratelimit import user_key
from authd.storage.recovery import KINDS, PROOF_ACTOR

if TYPE_CHECKING:
    from authd.portal.pages import Page
    from authd.portal.resource import Portal

log = Logger(namespace="authd.portal.recovery")
CLIENT = PROOF_ACTOR.split(":", 1)[1]  # the front-end is the portal's
# Accepts in which a second factor passed (not OK_NO_TOKEN: that proves no code).
_SECOND_FACTOR_PASSED = frozenset({Reason.OK, Reason.OK_BACKUP_CODE})
QUEUED = "Your request is queued. The help desk will check it and contact you."


def proof_request(
    kind: str, user: str, password: str, code: str, source: str, frontend: str
) -> AuthRequest | None:
    """The engine request that proves the user for `kind`; None when something the
    kind needs is missing (or the kind is unknown)."""
    if kind == "token" and password:
        return AuthRequest(user=user, password=password, frontend=frontend, client=CLIENT,
                           source=source, first_factor="chain", otp_mode="challenge")
    if kind == "password" and code:
        return AuthRequest(user=user, password="", otp=code, frontend=frontend,
                           client=CLIENT, source=source, first_factor="none",
                           otp_mode="inline")
    if kind == "mail" and password and code:
        return AuthRequest(user=user, password=password, otp=code, frontend=frontend,
                           client=CLIENT, source=source, first_factor="chain",
                           otp_mode="inline")
    return None


def proved(kind: str, decision: Decision) -> bool:
    """Lost token: the password passed and a code would be due (a user with no token
    has nothing to recover). The other kinds: the engine accepted the factors given."""
    if kind == "token":
        return decision.outcome is Outcome.CHALLENGE
    return decision.outcome is Outcome.ACCEPT and decision.reason in _SECOND_FACTOR_PASSED


def recover_page(portal: Portal, request: Any, error: str = "", status: int = 200) -> Page:
    """The form, with a fresh pre-log-in CSRF token (double submit, as the log-in)."""
    token = secrets.token_urlsafe(32)
    portal._set_cookie(request, _r.LOGIN_CSRF_COOKIE, token)
    return portal._render("recover.html", None, csrf=token, error=error, kinds=KINDS,
                          status=status)


async def recover(portal: Portal, request: Any) -> Page:
    """POST `recover`: check the form's token and the proof, then queue the request."""
    form = _r._form(request)
    cookie = (request.getCookie(_r.LOGIN_CSRF_COOKIE) or b"").decode("ascii", "replace")
    if not _r._same(form.get("csrf", ""), cookie):
        return recover_page(portal, request, "This form expired. Please try again.", 403)
    kind, user = form.get("kind", ""), form.get("user", "").strip()
    source = portal._source(request)
    wanted = proof_request(kind, user, form.get("password", ""), form.get("code", "").strip(),
                           source, _r.FRONTEND)
    if not user or wanted is None:
        return recover_page(portal, request, "Fill in what the chosen case asks for.", 400)
    if portal._throttled(user, source):
        return recover_page(portal, request, "Too many attempts. Wait and try again.", 429)
    decision = await portal.deps.authenticate(wanted)
    key = user_key(user, source)
    if decision.reason in (Reason.BACKEND_DOWN, Reason.UNAVAILABLE):
        return portal._message("The service is unavailable. Try again later.", 503)
    if not proved(kind, decision):
        if decision.reason is not Reason.BAD_REQUEST:
            portal.deps.limits.backoff.failure(key, portal.deps.seconds())
        return recover_page(portal, request, _r.GENERIC_FAILURE, 401)
    portal.deps.limits.backoff.success(key)
    actor, ops = f"selfservice:{decision.user}", portal._ops
    try:
        issue = await portal.deps.run_blocking(ops.open_issue, actor, decision.user, kind)
    except InvalidInput:  # the only refusal after a proof: a directory user's password
        return portal._message(DIRECTORY_PASSWORD, 400)
    # The notice goes out on a pool thread; the user's answer does not wait for it.
    sent = portal.deps.run_blocking(ops.notify_issue, actor, issue)
    sent.addErrback(lambda failure: log.failure("restore access: notice failed", failure))
    return portal._message(QUEUED, 202)


async def admitted(portal: Portal, decision: Decision) -> bool:
    """Whether a sign-in the engine let through enters the portal, with the recovery
    rules applied. A normal sign-in (a second factor passed, or the policy needs none)
    closes the user's open requests: the real user is here, so a request someone else
    made must not be approved later. A user whose tokens are all disabled (an approved
    lost-token request, or an operator's decision) enters on the password alone only
    with a live one-time grant; without one they would enroll past the operator."""
    actor = f"selfservice:{decision.user}"
    ops = portal._ops
    if decision.outcome is Outcome.ACCEPT:
        await portal.deps.run_blocking(ops.supersede_issues, actor, decision.user)
        return True
    if not await portal.deps.run_blocking(ops.has_disabled_tokens, decision.user):
        return True
    return bool(await portal.deps.run_blocking(ops.take_grant, actor, decision.user))
