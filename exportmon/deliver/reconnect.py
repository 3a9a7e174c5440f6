"""Retrying work at a remote destination on a new connection (FTP/FTPS, SFTP).

A lost connection, a timeout or a failed size check may be cured by connecting
again; what the server answered while the connection stood (a refused login, a
permission, a full disk) will not be. :func:`on_new_connections` runs one operation
under the project's back-off (:mod:`exportmon.net.retry`, whose waits end on a stop
request), closing the connection after every failure so that the next attempt
starts afresh, and turns running out of attempts into one
:class:`~exportmon.errors.ConnectionFailed` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from exportmon.errors import ConnectionFailed, ExportmonError
from exportmon.log import get_logger
from exportmon.net import retry

log = get_logger(__name__)

T = TypeVar("T")


class Reconnecting(Protocol):
    """What a destination offers :func:`on_new_connections`."""

    display: str
    retries: int
    backoff: float

    def _connected(self) -> Any: ...

    def close(self) -> None: ...

    def _classify(self, exc: BaseException, what: str) -> ExportmonError | None: ...


def on_new_connections(
    destination: Reconnecting,
    what: str,
    operation: Callable[[Any], T],
    *,
    network_errors: tuple[type[BaseException], ...],
    describe: Callable[[BaseException], str],
) -> T:
    """``operation(connection)``, tried again on a new connection while the
    destination's ``_classify`` says a failure may pass.

    ``what`` names the work in messages (``upload of people.csv``). The hint of the
    final failure says it is retried later only where something will retry it: a
    standalone ``push-ftp`` sets ``retried_later = False`` on its destinations.
    """

    def once() -> T:
        try:
            return operation(destination._connected())
        except ExportmonError:
            destination.close()
            raise
        except network_errors as exc:
            error = destination._classify(exc, what)
            destination.close()
            if error is not None:
                raise error from None
            raise retry.TryAgain(describe(exc)) from None

    def give_up(failure: retry.TryAgain, attempts: int) -> ConnectionFailed:
        later = getattr(destination, "retried_later", True)
        return ConnectionFailed(
            f"{what} at {destination.display} failed after {attempts} attempts: {failure.message}",
            hint="the server or the network is unreliable; "
            + ("it is retried later" if later else "try again later"),
        )

    def tell(failure: retry.TryAgain, attempts: int, delay: float) -> None:
        log.warning(
            "%s at %s failed (%s); retrying in %.0f s",
            what,
            destination.display,
            failure.message,
            delay,
        )

    policy = retry.RetryPolicy(retries=destination.retries, first=destination.backoff)
    return retry.call(once, policy, give_up=give_up, on_retry=tell)
