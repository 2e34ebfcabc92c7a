"""`loudou config --check`: can each part be reached, with what loudou.yaml says?"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

from loudou.config import Settings, mask_secrets, redact_url


def _source(settings: Settings) -> str:
    from loudou.source import SourceSpec, read_opportunity_keys

    spec = SourceSpec.from_settings(settings)
    if spec.url.startswith("sqlite:///") and not Path(spec.url.split(":///", 1)[1]).exists():
        raise FileNotFoundError(f"no such file: {spec.url.split(':///', 1)[1]}")
    deals = read_opportunity_keys(spec)  # a real read of the CRM's deals, not just a login
    return f"{settings.source.kind} {spec.label}: {len(deals):,} deals"


def _warehouse(settings: Settings) -> str:
    from loudou.warehouse import duckdb_location, open_warehouse

    url = settings.warehouse.url
    if url.startswith("duckdb:///") and not Path(duckdb_location(url)[0]).exists():
        return f"{redact_url(url)}: not made yet (the first nightly makes it)"
    runs = open_warehouse(url).query("SELECT 1 AS ok")
    return f"{redact_url(url)}: reachable" if len(runs) else redact_url(url)


def _smtp(settings: Settings) -> str:
    smtp = settings.digest.smtp
    password = None
    if smtp.username:
        if not smtp.password_env or smtp.password_env not in os.environ:
            raise LookupError(
                f"digest.smtp.password_env: environment variable {smtp.password_env} is not set"
            )
        password = os.environ[smtp.password_env]
    context = ssl.create_default_context()
    if smtp.security == "ssl":
        client = smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context
        )
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.username:
            client.login(smtp.username, password or "")
    login = f", logged in as {smtp.username}" if smtp.username else ""
    return f"{smtp.host}:{smtp.port} ({smtp.security}): ready{login}"


CHECKS: dict[str, Callable[[Settings], str]] = {
    "source": _source,
    "warehouse": _warehouse,
    "smtp": _smtp,
}


def check_ready(settings: Settings) -> list[tuple[str, bool, str]]:
    """(part, ready, one line) for the source, the warehouse and the SMTP server."""
    out = []
    for part, check in CHECKS.items():
        try:
            out.append((part, True, check(settings)))
        except Exception as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out.append((part, False, mask_secrets(f"{type(exc).__name__}: {line}")))
    return out
