"""Outgoing mail over SMTP (`smtp` config): one message per call. `send_mail` blocks
(authctl's reminders); `send_mail_async` is Twisted's SMTP client, for the daemon, whose
reactor must never wait on a mail server. STARTTLS and implicit TLS verify the server's
certificate (system CAs)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred

from authd.config.model import SmtpConfig
from authd.core.errors import AuthdError


class MailUnavailable(AuthdError):
    """The message could not be handed to the mail server (the reason names the error
    type, never a password)."""


def _message(cfg: SmtpConfig, to: str, subject: str, body: str) -> EmailMessage:
    if not cfg.host:
        raise MailUnavailable("smtp.host is not set: authd sends no mail")
    msg = EmailMessage()
    msg["From"] = cfg.from_address
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def send_mail(cfg: SmtpConfig, to: str, subject: str, body: str) -> None:
    """Hand one plain-text message to `cfg.host`; raises MailUnavailable."""
    msg = _message(cfg, to, subject, body)
    context = ssl.create_default_context()
    try:
        server: smtplib.SMTP
        if cfg.security == "tls":
            server = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=context)
        else:
            server = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with server:
            if cfg.security == "starttls":
                server.starttls(context=context)
            if cfg.username:
                server.login(cfg.username, cfg.password.reveal() if cfg.password else "")
            server.send_message(msg)
    except (smtplib.SMTPException, OSError) as e:
        raise MailUnavailable(f"mail to the server failed: {type(e).__name__}") from None


def send_mail_async(reactor: Any, cfg: SmtpConfig, to: str, subject: str,
                    body: str) -> Deferred[Any]:
    """Hand one message to `cfg.host` with Twisted's ESMTP client; the Deferred fires
    when the server took it, or fails with MailUnavailable (no password in the text)."""
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import optionsForClientTLS
    from twisted.mail.smtp import ESMTPSenderFactory

    data = _message(cfg, to, subject, body).as_bytes()
    done: Deferred[Any] = Deferred()
    tls = optionsForClientTLS(cfg.host)
    factory = ESMTPSenderFactory(
        cfg.username.encode() or None,
        cfg.password.reveal().encode() if cfg.password else None,
        cfg.from_address, [to], BytesIO(data), done,
        retries=0, timeout=int(max(1, cfg.timeout)), contextFactory=tls,
        requireAuthentication=bool(cfg.username),
        # STARTTLS is required when asked for; implicit TLS already is; `none` is plain.
        requireTransportSecurity=cfg.security == "starttls",
        hostname=cfg.host,
    )
    endpoint: Any = HostnameEndpoint(reactor, cfg.host, cfg.port, timeout=cfg.timeout)
    if cfg.security == "tls":
        endpoint = wrapClientTLS(tls, endpoint)
    connected = endpoint.connect(factory)
    connected.addErrback(done.errback)

    def failed(failure: Any) -> None:
        raise MailUnavailable(f"mail to the server failed: {failure.type.__name__}")

    done.addErrback(failed)
    return done
