"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

``SMTPServer()`` binds 127.0.0.1 on a free port (``.port``); ``.messages`` are
:class:`Received` (envelope sender, recipients, the parsed message); ``.connections``
counts SMTP sessions (connection reuse is visible); ``.refuse`` holds addresses answered
with ``550`` at ``RCPT TO``.
"""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

__all__ = ["Received", "SMTPServer"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def to(self) -> str:
        return self.rcpt_tos[0]

    def part(self, subtype: str) -> str:
        """The decoded text of the ``text/<subtype>`` part."""
        for part in self.message.walk():
            if part.get_content_type() == f"text/{subtype}":
                return part.get_content()
        raise LookupError(f"no text/{subtype} part")

    @property
    def html(self) -> str:
        return self.part("html")

    @property
    def text(self) -> str:
        return self.part("plain")


@dataclass
class _Handler:
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SMTPServer(Controller):
    def __init__(self) -> None:
        self.handler_state = _Handler()
        self.connections = 0
        super().__init__(self.handler_state, hostname="127.0.0.1", port=0)

    def factory(self) -> SMTP:
        self.connections += 1
        return SMTP(self.handler, hostname="persona-test-smtp")

    def _trigger_server(self) -> None:
        # port 0: learn the port the OS chose before aiosmtpd connects to check it is up
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
        self.connections -= 1  # that probe is not a client session

    @property
    def messages(self) -> list[Received]:
        with self.handler_state.lock:
            return list(self.handler_state.messages)

    @property
    def refuse(self) -> set[str]:
        return self.handler_state.refuse

    def by_recipient(self) -> dict[str, Received]:
        return {m.to: m for m in self.messages}

    def clear(self) -> None:
        with self.handler_state.lock:
            self.handler_state.messages.clear()
        self.connections = 0
