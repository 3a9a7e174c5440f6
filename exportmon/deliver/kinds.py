"""Which module delivers to which kind of destination URL.

Each kind is one module with an ``open_destination(config, url)`` function that
returns a :class:`~exportmon.deliver.Destination` (nothing is connected until it
is used). Modules are imported only when a destination of their kind is opened,
so an install without an optional library (paramiko for SFTP) works for the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from exportmon.deliver.urls import DestinationURL, parse_destination_url

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver import Destination

#: URL kind → ``module:function`` opening such a destination.
KINDS: dict[str, str] = {
    "file": "exportmon.deliver.local:open_destination",
    "ftp": "exportmon.deliver.ftp:open_destination",
    "ftps": "exportmon.deliver.ftp:open_destination",
    "sftp": "exportmon.deliver.sftp:open_destination",
    "https": "exportmon.deliver.https:open_destination",
    "http": "exportmon.deliver.https:open_destination",
}


def open_destination(config: DestinationConfig) -> Destination:
    """The destination ``config`` describes; secrets are resolved here."""
    url = parse_destination_url(config.url)
    module_name, function = KINDS[url.kind].split(":")
    opener: Callable[[DestinationConfig, DestinationURL], Destination] = getattr(
        importlib.import_module(module_name), function
    )
    return opener(config, url)


def kind_of(config: DestinationConfig) -> str:
    """``file``, ``ftp``, ``ftps``, ``sftp``, ``https`` or ``http``."""
    return parse_destination_url(config.url).kind


__all__ = ["KINDS", "DestinationURL", "kind_of", "open_destination"]
