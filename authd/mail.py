"""Outgoing mail over SMTP (`smtp` config): one message per call, for authctl's
reminders. STARTTLS and implicit TLS verify the server's certificate (system CAs)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from authd.config.model import SmtpConfig
from authd.core.errors import AuthdError


class MailUnavailable(AuthdError):
    """The message could not be handed to the mail server (the reason names the error
    type, never a password)."""


def send_mail(cfg: SmtpConfig, to: str, subject: str, body: str) -> None:
    """Hand one plain-text message to `cfg.host`; raises MailUnavailable."""
    if not cfg.host:
        raise MailUnavailable("smtp.host is not set: authd sends no mail")
    msg = EmailMessage()
    msg["From"] = cfg.from_address
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
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
