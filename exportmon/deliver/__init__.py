"""Where files are delivered: one module per kind of destination URL.

Folders (:mod:`.local`), FTP/FTPS (:mod:`.ftp`), SFTP (:mod:`.sftp`) and HTTPS
(:mod:`.https`); :mod:`.kinds` says which module opens which URL. Every destination
writes a file under a temporary name (``<name>.in_progress`` by default, see
:class:`~exportmon.deliver.signals.TempNaming`) and renames it to ``<name>`` only
once it is complete (fsynced locally, its size checked remotely), so a consumer
never sees a partial file under its final name. A destination is used as a
context manager (a remote one keeps one connection, one login, for all the files
it is given) and offers the same small interface:

* ``label``: its name in the ledger (``local:/abs/dir``, ``ftps://host:21/in``),
  never with credentials; ``display``: its name in log lines;
* ``exists(target)``, ``holds(target, size, sha256)``: what is already there;
* ``put(item, target, progress=)``: deliver one file under ``target``, through
  its temporary name;
* optionally ``discard(target)`` (remove a temporary file left by a failure),
  ``describe()`` (one line for dry runs, nothing connected: ``would deliver to
  <display> (<temporary naming>; <signals>)``, the signals worded by
  :func:`exportmon.deliver.signals.describe`) and ``retried_later`` (set to
  ``False`` by a standalone ``push-ftp``, which nothing retries: its messages must
  not promise a retry).

Trigger files and manifests are written through ``put`` too (see
:mod:`.signals`); the kind modules only write bytes and rename. Which target a
file gets follows the overwrite policy (:func:`choose_target`); the order files go
in follows the ``order`` option (:func:`delivery_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from exportmon.errors import DeliveryError
from exportmon.files.names import export_type, timestamped_name
from exportmon.progress import ProgressFactory

OVERWRITE_POLICIES = ("replace", "keep", "timestamp")
#: Suffix of a file while it is being delivered (the gem's).
IN_PROGRESS = ".in_progress"

T = TypeVar("T")


@dataclass(frozen=True)
class Outgoing:
    """A file to deliver."""

    source: Path
    #: Its path relative to the destination: ``organizations/5-1-organizations.csv``.
    name: str
    bytes: int
    sha256: str | None = None
    #: The export type (``organizations``) when it is known apart from the name
    #: (a folder source's ``[[types]]`` rule); ``None``: taken from the name.
    type: str | None = None

    @classmethod
    def from_path(
        cls, source: Path, name: str, sha256: str | None = None, type: str | None = None
    ) -> Outgoing:
        """An outgoing file as it is on disk now; :class:`DeliveryError` when it is missing."""
        try:
            size = Path(source).stat().st_size
        except OSError as exc:
            raise DeliveryError(
                f"cannot deliver {source}: {exc.strerror}", retryable=False
            ) from None
        return cls(Path(source), name, size, sha256, type)


@dataclass(frozen=True)
class Placed:
    """A file that reached a destination."""

    #: The path written, relative to the destination (carries the time stamp with
    #: ``overwrite = "timestamp"``).
    target: str
    #: Where it is: an absolute path, or a URL without credentials.
    location: str
    bytes: int
    #: ``overwrite = "keep"`` found a file of that name and left it alone.
    kept: bool = False
    #: The receiving system's processing reference from its answer (HTTPS).
    reference: str | None = None
    #: The receiving system reports later how it processed the file (HTTPS
    #: ``status_url``): the delivery is recorded ``submitted`` and its status polled.
    submitted: bool = False


class Destination(Protocol):
    """What :mod:`exportmon.actions.deliver` needs from a destination."""

    label: str
    display: str
    overwrite: str

    def exists(self, target: str) -> bool: ...

    def holds(self, target: str, size: int, sha256: str | None) -> bool: ...

    def put(
        self, item: Outgoing, target: str, *, progress: ProgressFactory | None = None
    ) -> Placed: ...

    def location(self, target: str) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Destination: ...

    def __exit__(self, *exc: object) -> None: ...


def choose_target(
    destination: Destination, name: str, moment: datetime | None = None
) -> tuple[str, bool]:
    """The target for ``name`` under the destination's overwrite policy, and whether an
    existing file is to be kept instead (``keep``).

    ``replace`` overwrites; ``keep`` leaves an existing file alone; ``timestamp``
    never overwrites: each delivery gets the UTC time appended to its name
    (``5-1-sites.20260123T084000Z.csv``), keeping every earlier one.
    """
    policy = destination.overwrite
    if policy == "replace":
        return name, False
    if policy == "keep":
        return name, destination.exists(name)
    for counter in range(100):
        candidate = timestamped_name(name, moment, counter=counter)
        if not destination.exists(candidate):
            return candidate, False
    raise DeliveryError(f"no free time-stamped name for {name} at {destination.display}")


def delivery_order(
    items: Iterable[T],
    order: Sequence[str],
    name: Callable[[T], str] = str,
    type: Callable[[T], str | None] | None = None,
) -> list[T]:
    """``items`` with the export types listed in ``order`` first, in that order, then
    the rest alphabetically by name (``organizations`` before ``sites``).

    An item's type is ``type(item)`` where that knows it (:attr:`Outgoing.type`: a
    folder source's ``[[types]]``), else the one in its name."""
    rank = {kind: position for position, kind in enumerate(order)}

    def key(item: T) -> tuple[int, str]:
        text = name(item)
        kind = (type(item) if type is not None else None) or export_type(text)
        return rank.get(kind or "", len(rank)), text

    return sorted(items, key=key)


def check_overwrite(policy: str) -> str:
    """``policy`` if it is one of :data:`OVERWRITE_POLICIES`, else a :class:`DeliveryError`."""
    if policy not in OVERWRITE_POLICIES:
        raise DeliveryError(
            f"unknown overwrite policy {policy!r}",
            hint="use " + ", ".join(OVERWRITE_POLICIES),
            retryable=False,
        )
    return policy
