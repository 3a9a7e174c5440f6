"""A recording SMTP server (aiosmtpd) in plain+STARTTLS and implicit-TLS variants.

:class:`SmtpServer` accepts mail on 127.0.0.1 and keeps every message it was
given as a :class:`ReceivedMail` (envelope, raw bytes, parsed message, whether
the session was encrypted and who authenticated). With a *user* configured,
AUTH PLAIN and LOGIN are offered and MAIL FROM is refused with ``530`` until
the client has authenticated.

aiosmtpd notes (1.4.6):

* ``Controller`` cannot use port 0: after binding it connects to
  ``self.port`` to trigger its lazy protocol factory. This module binds the
  listening socket itself and hands it to asyncio, so the OS picks the port.
* A stopped ``Controller`` has closed its event loop and cannot start again;
  :meth:`SmtpServer.start` builds a new one on the same port every time.
* ``auth_require_tls`` only recognises STARTTLS. On an implicit-TLS listener
  AUTH would never be offered, so the SMTPS variant must pass
  ``auth_require_tls=False`` even though every byte is encrypted there.
* ``auth_required=True`` combined with ``auth_require_tls=False`` makes aiosmtpd
  emit a UserWarning for each connection; the "authentication required" rule
  is therefore enforced in this module's MAIL hook instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import secrets
import smtplib
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from servers import LOCALHOST, ServerStartError, wait_for_port_closed
from servers.tlsca import ServerCert


@dataclass(frozen=True)
class ReceivedMail:
    """One message accepted by the server.

    Attributes:
        mail_from: Envelope sender (MAIL FROM).
        rcpt_tos: Envelope recipients (RCPT TO), in order.
        data: The message exactly as transmitted (after dot-unstuffing).
        message: *data* parsed with :data:`email.policy.default`, after
            turning CRLF line ends into ``\n``.
        tls: Whether the session was encrypted (STARTTLS or implicit TLS).
        auth_user: The authenticated login, ``None`` without AUTH.
        peer: The client's (address, port).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage
    tls: bool
    auth_user: str | None
    peer: tuple[str, int]


class _Handler:
    """aiosmtpd handler: enforces AUTH when configured and records messages."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.user is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        auth_user = (
            auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None
        )
        # SMTP transmits CRLF; Python's email API is friendlier with "\n" lines.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.owner._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=raw,
                message=parsed,
                tls=tls,
                auth_user=auth_user,
                peer=tuple(session.peer[:2]) if session.peer else ("", 0),  # type: ignore[arg-type]
            )
        )
        return "250 Message accepted for delivery"


class _SMTP(SMTP):
    """aiosmtpd's server, also taking the ``AUTH=`` parameter of MAIL FROM (RFC 4954),
    which a relaying server such as Dovecot's submission service sends."""

    def _getparams(self, params: Any) -> Any:
        result = super()._getparams(params)
        if result is not None:
            result.pop("AUTH", None)
        return result


class _SocketController(Controller):
    """Controller that serves an already-bound listening socket."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        self._listen_sock = sock
        self.protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, sock=self._listen_sock, ssl=self.ssl_context
        )

    def factory(self) -> SMTP:
        protocol = _SMTP(self.handler, **self.SMTP_kwargs)
        self.protocols.add(protocol)
        return protocol

    def abort_sessions(self, timeout: float = 5.0) -> None:
        """Reset every open client connection (from any thread)."""

        async def abort_all() -> None:
            for protocol in list(self.protocols):
                for transport in (protocol.transport, protocol._original_transport):
                    if transport is not None and not transport.is_closing():
                        transport.abort()
            # abort() closes the socket on the next loop iteration.
            await asyncio.sleep(0.01)

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(abort_all(), self.loop).result(timeout)


class SmtpServer:
    """aiosmtpd on 127.0.0.1 that records every message.

    Args:
        cert: Certificate for TLS; without it the server is plain only.
        implicit_tls: Speak TLS from the first byte (SMTPS) instead of
            offering STARTTLS; needs *cert*.
        user: Login for AUTH PLAIN/LOGIN; ``None`` disables AUTH entirely
            (anyone may send).
        password: Its password (random when ``None``).
        auth_require_tls: Refuse AUTH before STARTTLS. Defaults to ``False``,
            so tests may also authenticate over a plain connection; it is
            always ``False`` for SMTPS (see the module notes).
        require_starttls: Refuse everything but EHLO/STARTTLS/QUIT before
            STARTTLS (plain variant with *cert* only).
        ca_file: CA certificate :meth:`client` verifies the server with.
        host: Address to bind (tests use 127.0.0.1).

    Attributes:
        messages: Accepted messages, in arrival order.
    """

    def __init__(
        self,
        *,
        cert: ServerCert | None = None,
        implicit_tls: bool = False,
        user: str | None = "alerts",
        password: str | None = None,
        auth_require_tls: bool = False,
        require_starttls: bool = False,
        ca_file: Path | None = None,
        host: str = LOCALHOST,
    ) -> None:
        if implicit_tls and cert is None:
            raise ValueError("implicit TLS needs a certificate")
        self.cert = cert
        self.implicit_tls = implicit_tls
        self.user = user
        self.password = (password or secrets.token_urlsafe(10)) if user is not None else None
        self.auth_require_tls = auth_require_tls and not implicit_tls
        self.require_starttls = require_starttls and cert is not None and not implicit_tls
        self.ca_file = ca_file
        self.host = host
        self.messages: list[ReceivedMail] = []
        self._condition = threading.Condition()
        self._controller: _SocketController | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The listening port (stable across :meth:`stop`/:meth:`start`)."""
        if not self._port:
            raise RuntimeError("SmtpServer has not been started yet")
        return self._port

    @property
    def starttls(self) -> bool:
        """Whether STARTTLS is offered (plain variant with a certificate)."""
        return self.cert is not None and not self.implicit_tls

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._controller is not None

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least *count* messages arrived; return all of them.

        Raises:
            TimeoutError: fewer than *count* messages after *timeout* seconds.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s), got {len(self.messages)} in {timeout}s"
                )
            return list(self.messages)

    def client(self, *, login: bool = True, timeout: float = 30) -> smtplib.SMTP:
        """Return a connected smtplib client (STARTTLS/SMTPS verified, logged in).

        The TLS context trusts only :attr:`ca_file`.
        """
        context = self._client_context()
        client: smtplib.SMTP
        if self.implicit_tls:
            client = smtplib.SMTP_SSL(self.host, self.port, context=context, timeout=timeout)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=timeout)
            if self.starttls:
                client.starttls(context=context)
        if login and self.user is not None and self.password is not None:
            client.login(self.user, self.password)
        return client

    def _client_context(self) -> ssl.SSLContext | None:
        if self.cert is None:
            return None
        if self.ca_file is None:
            raise RuntimeError("SmtpServer needs ca_file to verify its certificate")
        return ssl.create_default_context(cafile=str(self.ca_file))

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Listen (on the same port again after a stop) and serve in a background thread.

        Raises:
            ServerStartError: the port cannot be bound or aiosmtpd fails to start.
        """
        if self._controller is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            sock.listen(100)
        except OSError as exc:
            sock.close()
            raise ServerStartError(
                f"SMTP server cannot bind {self.host}:{self._port}: {exc}"
            ) from exc
        self._port = sock.getsockname()[1]
        context = self.cert.server_context() if self.cert is not None else None
        kwargs: dict[str, Any] = {
            "server_hostname": "localhost",
            "ready_timeout": 10.0,
            "auth_require_tls": self.auth_require_tls,
            "require_starttls": self.require_starttls,
        }
        if self.user is not None:
            kwargs["authenticator"] = self._authenticate
        if self.implicit_tls:
            kwargs["ssl_context"] = context
        elif context is not None:
            kwargs["tls_context"] = context
        controller = _SocketController(_Handler(self), sock, **kwargs)
        try:
            controller.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                controller.stop(no_assert=True)
            sock.close()
            raise ServerStartError(f"SMTP server did not start: {exc!r}") from exc
        self._controller = controller

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, drop open sessions and release the port."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        # Controller.stop() only cancels tasks; without this the server side of
        # open sessions would linger as unclosed transports.
        with contextlib.suppress(Exception):
            controller.abort_sessions()
        controller.stop()
        wait_for_port_closed(self.host, self._port, timeout=timeout)

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start` on the same port; messages are kept."""
        self.stop()
        self.start()

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (
            isinstance(auth_data, LoginPassword)
            and self.user is not None
            and self.password is not None
            and secrets.compare_digest(auth_data.login, self.user.encode())
            and secrets.compare_digest(auth_data.password, self.password.encode())
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def _record(self, mail: ReceivedMail) -> None:
        with self._condition:
            self.messages.append(mail)
            self._condition.notify_all()
