"""Mail sent through an outbox table: each message at most once per period and recipient,
every attempt on record, a rerun picking up what failed (the digests, the follow-up lists)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from typing import Any

import pandas as pd

from loudou.config import Smtp
from loudou.digest import DigestError, Recipient
from loudou.mailer import DeliveryError, deliver
from loudou.warehouse import Warehouse, Write, utc_now


@dataclass(frozen=True)
class Outbox:
    """An outbox table of the warehouse: a row per period (`period_column`) and recipient."""

    warehouse: Warehouse
    table: str
    period_column: str

    def row(self, period: date, recipient: str) -> dict[str, Any] | None:
        rows = self.warehouse.query(
            f"SELECT * FROM {self.table} WHERE {self.period_column} = :p AND recipient = :r",
            {"p": period, "r": recipient},
        )
        return rows.iloc[0].to_dict() if len(rows) else None

    def record(
        self,
        period: date,
        recipient: str,
        language: str,
        status: str,
        attempts: int,
        error: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Each change of a row commits on its own: nothing is marked sent that was not."""
        row = pd.DataFrame(
            [
                {
                    self.period_column: pd.Timestamp(period),
                    "recipient": recipient,
                    "language": language,
                    "status": status,
                    "attempts": attempts,
                    "last_error": error,
                    "sent_at": utc_now() if status == "sent" else None,
                    "message_id": message_id,
                }
            ]
        )
        keys = (self.period_column, "recipient")
        self.warehouse.apply([Write(self.table, row, replace="keys", keys=keys)])


@dataclass(frozen=True)
class Outgoing:
    """A mail to send: its recipient, and the message, made only when it is to be sent
    (raises ValueError for an address no header can carry)."""

    recipient: Recipient
    message: Callable[[], EmailMessage]


def bad_address(recipient: Recipient, exc: ValueError) -> str:
    return f"bad e-mail address {recipient.email!r} for {recipient.name} ({recipient.key}): {exc}"


def send_through(
    outbox: Outbox,
    period: date,
    language: str,
    mails: list[Outgoing],
    smtp: Smtp,
    password: str | None,
    kind: str,
) -> dict[str, str]:
    """Send each mail not yet sent for `period`; returns what became of each recipient's.
    After `smtp.give_up_after` recipients in a row found the server unreachable, stop: the
    rest wait in the outbox for the next run (`kind` names the mail in that error)."""
    results: dict[str, str] = {}
    unreachable_in_a_row = 0
    for mail in mails:
        recipient = mail.recipient
        address = recipient.address
        previous = outbox.row(period, address)
        attempts = int(previous["attempts"]) if previous else 0
        if previous and previous["status"] == "sent":
            results[address] = "already sent"
            continue
        if not recipient.email:
            error = f"no e-mail address for {recipient.name} ({recipient.key})"
            outbox.record(period, address, language, "failed", attempts, error)
            results[address] = f"failed: {error}"
            continue
        try:
            message = mail.message()
        except ValueError as exc:  # an address no header can carry (a line break in it)
            error = bad_address(recipient, exc)
            outbox.record(period, address, language, "failed", attempts, error)
            results[address] = f"failed: {error}"
            continue
        outbox.record(period, address, language, "pending", attempts)
        try:
            attempts += deliver(message, smtp, password)
            unreachable_in_a_row = 0
        except DeliveryError as exc:
            unreachable_in_a_row = unreachable_in_a_row + 1 if exc.unreachable else 0
            outbox.record(period, address, language, "failed", attempts + exc.attempts, str(exc))
            results[address] = f"failed: {exc}"
            if unreachable_in_a_row >= smtp.give_up_after:
                left = len(mails) - len(results)
                raise DigestError(
                    f"{kind}: gave up: {exc} for {unreachable_in_a_row} recipients in a row; "
                    f"{left} more {kind}s wait in the outbox for the next run"
                ) from None
            continue
        outbox.record(period, address, language, "sent", attempts, message_id=message["Message-ID"])
        results[address] = "sent"
    return results
