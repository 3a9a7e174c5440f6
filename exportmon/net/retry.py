"""One retry and back-off policy, and waits that end when the process is asked to stop.

Every repeated attempt in exportmon (downloads, FTP transfers, the watcher's
reconnects) waits by :class:`RetryPolicy`: exponential back-off from ``first``
seconds, multiplied by ``factor`` per failure, capped at ``cap`` seconds, with up to
``jitter`` (a fraction) added at random so that many clients do not retry in step.
A server's ``Retry-After`` replaces the computed wait, capped the same way.

Waiting is interruptible. :func:`request_stop` (called by the SIGTERM/SIGINT
handler, see :mod:`exportmon.signals`) wakes every :func:`wait` at once, which
raises :class:`Interrupted`; the work stays resumable (a download keeps its part
file, a delivery its ledger state) and the next run takes it up. A process told
to stop in the middle of a 60-second ``Retry-After`` therefore stops within a
fraction of a second.

Typical use::

    policy = RetryPolicy(retries=3)
    result = call(operation, policy, give_up=lambda failure, attempts: MyError(...))

where ``operation`` raises :class:`TryAgain` for a failure another attempt may
overcome, and any other exception for one it cannot.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from exportmon.signals import (
    Interrupted,
    clear_stop,
    request_stop,
    stop_event,
    stop_requested,
)

T = TypeVar("T")

# The stop request is the one the signal handler sets (see exportmon.signals).
__all__ = [
    "Backoff",
    "Interrupted",
    "RetryPolicy",
    "TryAgain",
    "call",
    "clear_stop",
    "parse_retry_after",
    "request_stop",
    "stop_event",
    "stop_requested",
    "wait",
]


def wait(seconds: float) -> None:
    """Sleep ``seconds``; raise :class:`Interrupted` as soon as a stop is requested."""
    if stop_event().wait(max(0.0, seconds)):
        raise Interrupted()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long apart to try again.

    ``retries`` further attempts follow the first; the wait after the ``n``-th failure
    is ``first * factor**(n-1)``, plus up to ``jitter`` of it at random, at most ``cap``.
    """

    retries: int = 3
    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.1

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` (1 or more) failed attempts.

        ``retry_after`` (a server's ``Retry-After``, in seconds) replaces the
        computed back-off; either is capped at :attr:`cap`.
        """
        if retry_after is not None:
            return min(self.cap, max(0.0, retry_after))
        base = self.first * self.factor ** max(0, failures - 1)
        return min(self.cap, base * (1.0 + random.random() * self.jitter))

    def exhausted(self, failures: int) -> bool:
        """Whether ``failures`` failed attempts use up every retry."""
        return failures > self.retries


class Backoff:
    """The growing wait between reconnects of a long-running loop (never gives up).

    :meth:`next` returns the wait after one more failure; :meth:`reset` after a success.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return self.policy.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0


class TryAgain(Exception):
    """Raised by an operation given to :func:`call` when another attempt may work.

    ``retry_after`` is the wait the server asked for, if any (seconds).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def call(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    give_up: Callable[[TryAgain, int], BaseException],
    on_retry: Callable[[TryAgain, int, float], None] | None = None,
    deadline: float | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run ``operation`` until it returns, retrying each :class:`TryAgain` by ``policy``.

    After a failure, ``on_retry(failure, attempts_so_far, wait)`` is called (to log
    it) and :func:`wait` sleeps. When the retries are used up, or the wait would pass
    ``deadline`` (a :func:`time.monotonic` time), ``give_up(failure, attempts)``
    gives the exception raised. :class:`Interrupted` ends the waiting at once.
    ``sleep`` replaces :func:`wait` (tests record the waits with it).
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            return operation()
        except TryAgain as failure:
            pause = policy.delay(attempts, failure.retry_after)
            late = deadline is not None and time.monotonic() + pause > deadline
            if policy.exhausted(attempts) or late:
                raise give_up(failure, attempts) from None
            if on_retry is not None:
                on_retry(failure, attempts, pause)
            (sleep or wait)(pause)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())
