"""What a dry run shows: the whole way of each export, checked as the real run checks it.

Before the first byte of a download the real run checks the link (scheme,
expiry), the addresses it resolves to (``download.allow_hosts``, private and
loopback addresses), the server's TLS certificate, and a size it knows
(an attachment's) against ``download.max_bytes``. :func:`check_link` applies the
same checks, connecting no further than the TLS handshake, so a dry run says
"would refuse" exactly where the run would refuse, and never opens a one-time
link. :func:`export_plan` then lists every step: download, unpack, rewrite,
each destination (as the destination describes itself, see
:func:`destination_lines`) and the move of the mail to the archive folder.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import TYPE_CHECKING, Any

from exportmon.download import DownloadSettings, check_not_expired
from exportmon.errors import ConnectionFailed, DownloadError, ExportmonError
from exportmon.net.http import check_scheme, display_url, resolve_checked
from exportmon.net.tls import client_context, tls_error
from exportmon.units import format_size

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.mail.message import FoundExport


def check_link(monitor: MonitorConfig, link: str) -> None:
    """Raise what the real download would raise before its first byte, else return."""
    settings = DownloadSettings.from_config(monitor.download)
    scheme, host, port = check_scheme(link)
    check_not_expired(link)
    addresses = resolve_checked(
        host, port, settings.allow_hosts, allow_key="download.allow_hosts", action="download from"
    )
    if scheme != "https":
        return
    context = client_context(settings.ca_file, ca_key="download.ca_file")
    last: OSError | None = None
    for address in addresses:
        try:
            with (
                socket.create_connection((address, port), timeout=settings.timeout) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return
        except ssl.SSLError as exc:
            raise tls_error(f"{host}:{port}", exc, "download.ca_file") from None
        except OSError as exc:
            last = exc
    raise ConnectionFailed(f"cannot connect to {host}:{port}: {last}")


def check_size(monitor: MonitorConfig, size: int | None) -> None:
    """Raise the real run's refusal when a known ``size`` exceeds ``download.max_bytes``."""
    limit = monitor.download.max_bytes
    if size is not None and limit is not None and size > limit:
        raise DownloadError(
            f"the export ({format_size(size)}) is larger than download.max_bytes "
            f"({format_size(limit)})",
            hint="raise download.max_bytes to accept it",
            retryable=False,
        )


def destination_lines(monitor: MonitorConfig) -> list[str]:
    """What delivering to each of the monitor's destinations would do, one line each.

    Each destination says it itself (its ``describe()``, where it has one); nothing
    is connected and no password is looked up.
    """
    from exportmon.actions.deliver import without_secrets
    from exportmon.deliver.kinds import open_destination

    found: list[Any] = []
    for config in monitor.destinations:
        # No password is looked up for a plan: the secrets are left out.
        with contextlib.suppress(ExportmonError, ImportError):
            found.append(open_destination(without_secrets(config)))
    lines = []
    for destination in found:
        describe = getattr(destination, "describe", None)
        lines.append(describe() if callable(describe) else f"deliver to {destination.display}")
    return lines or ["deliver nowhere: no destination is configured"]


def export_plan(monitor: MonitorConfig, found: FoundExport, *, whole: bool) -> list[str]:
    """The dry-run lines for one export a mail announces (``whole``: beyond the download).

    A check that fails gives one line saying the export would be refused and why.
    """
    what = f"export {found.export_id}"
    try:
        if found.kind == "attachment":
            size = len(found.attachment.content) if found.attachment else None
            check_size(monitor, size)
            taken = (
                "take the dropped file" if monitor.source.kind == "folder" else "save the attached"
            )
            first = f"would {taken} {found.file_name} for {what}"
        elif found.link:
            check_link(monitor, found.link)
            first = (
                f"would download {found.file_name or 'the export'} for {what} "
                f"from {display_url(found.link)}"
            )
        else:
            return [f"would record a failure for {what}: the mail has no link or attached file"]
    except ExportmonError as exc:
        return [f"would refuse {what}: {exc.one_line()}"]
    if not whole:
        return [first]
    return [first, *_after_download(monitor, found.file_name or "", what)]


def resume_plan(
    monitor: MonitorConfig, file_name: str, export_id: int | None, state: str
) -> list[str]:
    """The dry-run lines for an export an earlier run left ``downloaded`` or ``unpacked``."""
    what = f"export {export_id}"
    first = f"would resume {what} ({file_name}) from {state}"
    return [first, *_after_download(monitor, file_name, what, unpacked=state == "unpacked")]


def _after_download(
    monitor: MonitorConfig, file_name: str, what: str, *, unpacked: bool = False
) -> list[str]:
    lines = []
    is_zip = file_name.lower().endswith(".zip")
    if not unpacked:
        if is_zip and monitor.unzip:
            lines.append(f"then unpack the zip ({_limits(monitor)})")
        elif is_zip:
            lines.append("then deliver the zip as it is (unzip = false)")
        if monitor.csv is not None and (monitor.unzip or not is_zip):
            lines.append(f"then rewrite its CSV files ({_dialect(monitor)})")
    lines += [f"then {line}" for line in destination_lines(monitor)]
    source = monitor.source
    if source.kind in ("imap", "pop3") and (source.archive or "").strip():
        lines.append(f"then move the mail to {source.archive!r} once {what} is delivered")
    else:
        lines.append(f"then mark the mail as done once {what} is delivered")
    return ["  " + line for line in lines]


def _limits(monitor: MonitorConfig) -> str:
    limits = monitor.zip
    shown = [f"at most {limits.max_entries} entries", f"ratio {limits.max_ratio:g}"]
    if limits.max_total_bytes is not None:
        shown.insert(0, f"at most {format_size(limits.max_total_bytes)} unpacked")
    return ", ".join(shown)


def _dialect(monitor: MonitorConfig) -> str:
    csv = monitor.csv
    assert csv is not None
    shown = [f"col_sep {csv.col_sep!r}", f"quoting {csv.quoting}"]
    if csv.row_sep is not None:
        shown.append(f"row_sep {csv.row_sep!r}")
    if csv.value_hook:
        shown.append(f"value_hook {csv.value_hook}")
    return ", ".join(shown)
