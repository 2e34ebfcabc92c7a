"""SMTP delivery with retries and back-off: implicit TLS, STARTTLS or plain."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from email.message import EmailMessage

from loudou.config import Smtp
from loudou.errors import LoudouError


class DeliveryError(LoudouError):
    def __init__(self, message: str, attempts: int, unreachable: bool = False):
        super().__init__(message)
        self.attempts = attempts
        # the server could not be reached at all (not a refusal of this recipient)
        self.unreachable = unreachable


# no server answered: refused, timed out, or the name does not resolve
UNREACHABLE = (smtplib.SMTPConnectError, ConnectionError, TimeoutError, socket.gaierror)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError))


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{rcpt} refused: {code} {msg.decode(errors='replace')}"
            for rcpt, (code, msg) in exc.recipients.items()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    return f"{type(exc).__name__}: {exc}"


def send_once(message: EmailMessage, smtp: Smtp, password: str | None) -> None:
    if smtp.security == "ssl":
        client = smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if smtp.username:
            client.login(smtp.username, password or "")
        client.send_message(message)


def deliver(message: EmailMessage, smtp: Smtp, password: str | None) -> int:
    """Send, retrying transient failures with exponential back-off; returns the attempts."""
    for attempt in range(smtp.retries + 1):
        try:
            send_once(message, smtp, password)
            return attempt + 1
        except Exception as exc:
            if not _transient(exc) or attempt == smtp.retries:
                where = f"{smtp.host}:{smtp.port}"
                unreachable = isinstance(exc, UNREACHABLE)
                raise DeliveryError(
                    f"smtp {where}: {_describe(exc)}", attempt + 1, unreachable
                ) from None
            time.sleep(smtp.retry_delay_seconds * 2**attempt)
    raise AssertionError("unreachable")
