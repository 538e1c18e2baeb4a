"""The ways a notification reaches a customer, behind one interface.

Every notification is stored (that is what ListNotifications reads); the log channel just says so
in one log line, and is used whenever no SMTP server is configured or the customer's address is
unknown. With ``EMPORIUM_SMTP_URL`` set (``smtp://host:port``), customers with a known address get
an email.

External sends are at least once: a send that succeeded can be repeated when the transaction around
it is run again or fails to commit. The email carries the notification id as its Message-ID, so
receivers that dedupe by Message-ID show it once.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from actors.notifications.domain import Sent
from brokers.contracts.notifications import Channel as ChannelName
from brokers.settings import Settings

log = structlog.get_logger()
SENDER = "emporium <no-reply@emporium.example>"
SMTP_TIMEOUT_S = 10.0


class Channel(Protocol):
    name: ChannelName

    async def send(self, sent: Sent) -> None:
        """Deliver the notification; raise if it could not be (the runtime retries it)."""


class LogChannel:
    name: ChannelName = "log"

    async def send(self, sent: Sent) -> None:
        n = sent.notification
        log.info(
            "notification.logged",
            notification_id=n.notification_id,
            customer_id=n.customer_id,
            order_id=n.order_id,
            template=n.template,
            subject=n.subject,
        )


class SmtpChannel:
    name: ChannelName = "email"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    @classmethod
    def from_url(cls, url: str) -> SmtpChannel:
        parts = urlsplit(url)
        if parts.scheme != "smtp" or not parts.hostname or parts.username or parts.path not in ("", "/"):
            raise ValueError(f"EMPORIUM_SMTP_URL must look like smtp://host:port, not {url!r}")
        return cls(parts.hostname, parts.port or 25)

    def message(self, sent: Sent) -> EmailMessage:
        if sent.address is None:
            raise ValueError(f"notification {sent.notification.notification_id} has no address to email")
        n = sent.notification
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = SENDER, sent.address, n.subject
        message["Message-ID"] = f"<{n.notification_id}@emporium>"
        message["Date"] = formatdate(sent.sent_at.timestamp(), usegmt=True)
        message.set_content(n.body)
        return message

    async def send(self, sent: Sent) -> None:
        # smtplib blocks: it runs in a worker thread so the event loop keeps serving other messages.
        await asyncio.to_thread(self._deliver, self.message(sent))

    def _deliver(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.send_message(message)


_LOG = LogChannel()


def channel_for(settings: Settings, address: str | None) -> Channel:
    """Email when an SMTP server is configured and the customer's address is known; else the log."""
    if settings.emporium_smtp_url and address is not None:
        return SmtpChannel.from_url(settings.emporium_smtp_url)
    return _LOG
