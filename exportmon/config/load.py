"""Finding, reading and validating monitor configs.

Validation happens once, here: a config that loads is one the rest of exportmon
can trust. Every problem is a :class:`ConfigError` whose message names the file,
the key and what is allowed; unknown keys get a "did you mean" suggestion (also
for the option names of the itrp-export-monitor gem).
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import difflib
import logging
import math
import os
import re
import stat
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from exportmon.config import value_hook
from exportmon.config.schema import (
    DestinationConfig,
    MonitorConfig,
    options_of,
    secret_fields,
    secret_source,
    toml_name,
)
from exportmon.errors import ConfigError, ConfigProblems, UsageError
from exportmon.notify import apprise as apprise_channels
from exportmon.paths import MonitorDirs, monitors_dir, state_dir
from exportmon.schedule import parse_schedule
from exportmon.units import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

#: The gem's option names and where each lives in exportmon's config.
GEM_OPTION_NAMES = {
    "id": "ids",
    "to_ftp": "deliver.ftp_url",
    "to_ftp_dir": "deliver.ftp_dir",
    "ftp_user_name": "deliver.ftp_user",
    "ftp_password": "deliver.ftp_password",
    "to": "deliver.to",
    "imap_address": "source.host",
    "imap_port": "source.port",
    "imap_ssl": 'source.security ("ssl", "starttls" or "plain")',
    "imap_user_name": "source.user",
    "imap_password": "source.password",
    "imap_mailbox": "source.mailbox",
    "imap_archive": "source.archive",
    "imap_search": "source.search",
    "on_exception": "[alerts] (smtp_url, to, command)",
    "csv_row_sep": "csv.row_sep",
    "csv_col_sep": "csv.col_sep",
    "csv_quote_char": "csv.quote_char",
    "csv_value_proc": "csv.value_hook",
    "logger": "nothing: logs go to <root>/log/",
    "daemonize": "nothing: run under systemd (see the README)",
}

#: ``ftp://host[:port]`` or ``ftps://...`` of the old ``deliver.ftp_url``.
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def discover(paths: typing.Sequence[Path] | None = None) -> list[Path]:
    """The config files named by ``paths`` (files or directories), or all configured ones.

    Raises :class:`ConfigError` when a named path does not exist or nothing is found.
    """
    if not paths:
        directory = monitors_dir()
        found = sorted(directory.glob("*.toml")) if directory.is_dir() else []
        if not found:
            raise ConfigError(
                f"no monitors configured in {directory}",
                hint="create one with: exportmon generate <export-id> <email> "
                "(it asks for what it needs; never a password on the command line)",
            )
        return found
    files: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            inside = sorted(path.glob("*.toml"))
            if not inside:
                raise ConfigError("directory holds no *.toml monitor configs", path=path)
            files.extend(inside)
        elif path.exists():
            files.append(path)
        else:
            raise ConfigError("config file not found", path=path)
    return files


def load_monitors(
    paths: typing.Sequence[Path] | None = None, *, strict: bool = False
) -> tuple[list[MonitorConfig], list[ConfigError]]:
    """Load every config named by ``paths`` (see :func:`discover`).

    A broken config does not stop the others from loading: the valid monitors and
    the errors of the broken ones are returned side by side.
    """
    monitors: list[MonitorConfig] = []
    errors: list[ConfigError] = []
    for path in discover(paths):
        try:
            monitors.append(load_monitor(path, strict=strict))
        except ConfigError as exc:
            errors.append(exc)
    names = [m.name for m in monitors]
    for name in {n for n in names if names.count(n) > 1}:
        errors.append(ConfigError(f"two config files define monitor {name!r}", hint="rename one"))
        monitors = [m for m in monitors if m.name != name]
    return monitors, errors


def load_monitor(path: Path, *, strict: bool = False) -> MonitorConfig:
    """Read and validate one monitor config file.

    Every problem of the file is found: one is raised as that :class:`ConfigError`,
    several as one :class:`ConfigProblems` naming them all. ``strict`` refuses a
    file that holds a plain secret and is readable by group or others, and a
    value hook that others can change (otherwise those are loud warnings).
    """
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", path=path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("file is not UTF-8 text", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    except RecursionError:
        raise ConfigError("invalid TOML: arrays or tables nested too deeply", path=path) from None
    problems = _Problems(path)
    config = _parse(data, path, None, problems)
    with problems.check():
        _check_permissions(config, path, strict=strict)
    with problems.check():
        _check_hook_permissions(config, path, strict=strict)
    problems.raise_any()
    return config


def parse(data: dict[str, Any], *, path: Path, name: str | None = None) -> MonitorConfig:
    """Validate parsed TOML ``data`` into a :class:`MonitorConfig`.

    Relative paths in the config are taken relative to the file's directory.
    Raises :class:`ConfigError` (:class:`ConfigProblems` for several problems).
    """
    problems = _Problems(path)
    config = _parse(data, path, name, problems)
    problems.raise_any()
    return config


class _Problems:
    """The problems found in one file. Checks run inside :meth:`check`: a problem
    ends that check only, so one load names every independent problem. A problem
    found by the checks of meaning is dropped when its table (or top-level key)
    already has a problem of form (a wrong type leaves a default behind, which
    must not be reported as a second mistake)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[ConfigError] = []
        self.form_roots: set[str] | None = None

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.add(exc)

    def add(self, error: ConfigError) -> None:
        if self.form_roots is not None and _root(error.key) in self.form_roots:
            return
        self.found.append(error)

    def form_checked(self) -> None:
        """The checks of form are done; from now on, checks of meaning."""
        self.form_roots = {_root(e.key) for e in self.found}

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise ConfigProblems(self.path, self.found)


def _root(key: str | None) -> str:
    return re.split(r"[.\[]", key or "", maxsplit=1)[0]


def _parse(
    data: dict[str, Any], path: Path, name: str | None, problems: _Problems
) -> MonitorConfig:
    deliver = data.get("deliver")
    entries: list[DestinationConfig] | None = None
    if isinstance(deliver, list):
        # [[deliver]]: an array of destinations; [deliver]: the old single table.
        data = {k: v for k, v in data.items() if k != "deliver"}
        entries = []
        for i, entry in enumerate(deliver):
            with problems.check():
                built = _build(DestinationConfig, entry, path, f"deliver[{i}].", problems)
                built.key = f"deliver[{i}]."
                entries.append(built)
    config: MonitorConfig = _build(MonitorConfig, data, path, "", problems)
    config.deliver_list = entries
    config.name = name or path.stem
    config.path = path
    problems.form_checked()
    _resolve_paths(config, path.parent)
    _check_semantics(config, path, problems)
    return config


# --- structural validation, driven by the dataclass field types -----------------------


def _build(cls: Any, data: Any, path: Path, prefix: str, problems: _Problems) -> Any:
    where = prefix.rstrip(".") or None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table, got {_describe(data)}", path=path, key=where)
    fields = {toml_name(f): f for f in options_of(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            problems.add(
                ConfigError(
                    "unknown option",
                    path=path,
                    key=prefix + key,
                    hint=_suggest(key, prefix, list(fields)),
                )
            )
    values = {}
    for toml_key, f in fields.items():
        if toml_key in data:
            with problems.check():
                values[f.name] = _convert(
                    data[toml_key], hints[f.name], f.metadata, path, prefix + toml_key, problems
                )
    return cls(**values)


def _suggest(key: str, prefix: str, known: list[str]) -> str:
    if not prefix and key in GEM_OPTION_NAMES:
        return f"the gem's {key!r} is {GEM_OPTION_NAMES[key]} in exportmon"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix + close[0]!r}?"
    return "allowed here: " + ", ".join(sorted(known))


def _convert(
    value: Any,
    tp: Any,
    meta: typing.Mapping[str, Any],
    path: Path,
    key: str,
    problems: _Problems,
) -> Any:
    kind = meta.get("kind")
    try:
        if kind == "duration":
            return parse_duration(value)
        if kind == "size":
            return parse_size(value)
    except ValueError as exc:
        raise ConfigError(str(exc), path=path, key=key) from None
    if kind == "char" and not (isinstance(value, str) and len(value) == 1):
        raise ConfigError(
            f"must be exactly one character, got {_describe(value)}", path=path, key=key
        )

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        # TOML has no null: an optional value is either absent or of the other type.
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, meta, path, key, problems)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(
                f"must be one of {allowed}, got {_describe(value)}", path=path, key=key
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {_describe(value)}", path=path, key=key)
        return [
            _convert(v, args[0], {}, path, f"{key}[{i}]", problems) for i, v in enumerate(value)
        ]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {_describe(value)}", path=path, key=key)
        key_type, value_type = args
        result = {}
        for k, v in value.items():
            if key_type is int:
                if not re.fullmatch(r"\d+", k):
                    raise ConfigError(
                        "must be an export id (a number)", path=path, key=f"{key}.{k}"
                    )
                converted_key: Any = int(k)
            else:
                converted_key = k
            result[converted_key] = _convert(v, value_type, {}, path, f"{key}.{k}", problems)
        return result
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key + ".", problems)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                # TOML allows nan and inf; a limit compared with nan is never exceeded.
                raise ConfigError(f"expected a number, got {value}", path=path, key=key)
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(
        f"expected {_TYPE_WORDS.get(tp, tp.__name__)}, got {_describe(value)}", path=path, key=key
    )


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a long string"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


# --- meaning: rules that involve more than one value ---------------------------------


def _expand(value: str, base: Path) -> str:
    candidate = Path(os.path.expandvars(value)).expanduser()
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def _resolve_paths(config: MonitorConfig, base: Path) -> None:
    """Every field marked ``path`` (``"url"``: when it has no scheme) made absolute."""
    tables: list[tuple[str, Any]] = [("", config), *config.tables()]
    for _, table in tables:
        for f in dataclasses.fields(table):
            how = f.metadata.get("path")
            value = getattr(table, f.name)
            if not how or not isinstance(value, str) or not value:
                continue
            if how == "url" and "://" in value:
                continue
            setattr(table, f.name, _expand(value, base))
    config.root = config.root or str(state_dir() / config.name)


Fail = typing.Callable[..., typing.NoReturn]


def _check_semantics(config: MonitorConfig, path: Path, problems: _Problems) -> None:
    def fail(key: str, message: str, hint: str | None = None) -> typing.NoReturn:
        raise ConfigError(message, path=path, key=key, hint=hint)

    check = problems.check
    with check():
        if not config.ids:
            fail("ids", "at least one export id is required", "e.g. ids = [777]")
    for i, export_id in enumerate(config.ids):
        with check():
            if export_id <= 0:
                fail(f"ids[{i}]", f"export ids are positive numbers, got {export_id}")
    with check():
        if len(set(config.ids)) != len(config.ids):
            fail("ids", "an export id is listed twice")
    for export_id in config.exports:
        with check():
            if export_id not in config.ids:
                fail(f"exports.{export_id}", "export id is not in ids", f"add {export_id} to ids")
    with check():
        if config.exit_when_idle < 0:
            fail("exit_when_idle", "must be 0 (never) or a number of minutes")
    for key, value, least in (
        ("source.port", config.source.port, 0),
        ("download.retries", config.download.retries, 0),
        ("download.max_redirects", config.download.max_redirects, 0),
        ("zip.max_entries", config.zip.max_entries, 1),
        ("zip.max_ratio", config.zip.max_ratio, 1),
    ):
        with check():
            if value < least:
                fail(key, f"must be at least {least}, got {value}")
    with check():
        if config.source.port > 65535:
            fail("source.port", f"not a port number: {config.source.port}")

    for rule in (
        _check_source,
        _check_csv,
        _check_deliver,
        _check_state_folder,
        _check_alerts,
        _check_heartbeat,
        _check_secrets,
        _check_files,
    ):
        with check():
            rule(config, fail, check)
    for export_id, expectation in config.exports.items():
        with check():
            if expectation.expect_every is not None:
                _check_schedule(expectation.expect_every, f"exports.{export_id}.expect_every", fail)
        for table in ("min_rows", "max_rows"):
            for export_type, rows in getattr(expectation, table).items():
                with check():
                    if rows < 0:
                        fail(f"exports.{export_id}.{table}.{export_type}", "must not be negative")
    for i, recognizer in enumerate(config.recognizers):
        with check():
            _check_recognizer(recognizer, f"recognizers[{i}]", fail, check)


Check = typing.Callable[[], typing.ContextManager[None]]


def _check_recognizer(recognizer: Any, key: str, fail: Fail, check: Check) -> None:
    with check():
        if not recognizer.name:
            fail(f"{key}.name", "every recognizer needs a name")
    with check():
        if not (recognizer.id_header or recognizer.subject_pattern or recognizer.export_id):
            fail(
                key, "needs id_header, subject_pattern or export_id to tell which export a mail is"
            )
    for attr in ("subject_pattern", "link_pattern"):
        pattern = getattr(recognizer, attr)
        with check():
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    fail(f"{key}.{attr}", f"invalid regular expression: {exc}")


def _check_files(config: MonitorConfig, fail: Fail, check: Check) -> None:
    """Every field marked ``exists`` names a file that is there."""
    for prefix, table in config.tables():
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            if f.metadata.get("exists") and value:
                with check():
                    if not Path(value).is_file():
                        fail(prefix + toml_name(f), f"file not found: {value}")


def _check_secrets(config: MonitorConfig, fail: Fail, check: Check) -> None:
    """At most one of ``<secret>``, ``<secret>_env``, ``<secret>_command`` is set, for
    every field marked ``secret``."""
    for prefix, table in config.tables():
        for names in secret_fields(type(table)):
            configured = [n for n in names if n and getattr(table, n) not in (None, [])]
            with check():
                if len(configured) > 1:
                    fail(prefix.rstrip("."), "set only one of " + ", ".join(configured))


def _require_secret(table: Any, name: str, prefix: str, fail: Fail) -> None:
    """The secret ``name`` of ``table`` is configured one way or another."""
    if secret_source(table, name, prefix).configured:
        return
    fail(
        prefix + name,
        "missing password",
        f"set {name}_env or {name}_command to keep it out of this file, or {name}",
    )


def _check_source(config: MonitorConfig, fail: Fail, check: Check) -> None:
    source = config.source
    if source.kind in ("imap", "pop3"):
        with check():
            if not source.host:
                fail("source.host", f"the {source.kind.upper()} server address is required")
        with check():
            if not source.user:
                fail("source.user", "the user name for the mail server is required")
        with check():
            if not 0 <= source.port <= 65535:
                fail("source.port", f"not a port number: {source.port}")
        with check():
            if source.auth == "password":
                _require_secret(source, "password", "source.", fail)
            elif source.auth == "oauth2":
                _check_oauth(source, fail)
            elif not source.token_command:
                fail(
                    "source.token_command",
                    f"auth = {source.auth!r} needs a command that prints an OAuth2 token",
                )
        with check():
            if source.kind == "pop3" and source.auth == "oauthbearer":
                fail("source.auth", "POP3 supports only password and xoauth2 logins")
    elif source.kind == "graph":
        with check():
            if not source.user:
                fail("source.user", 'kind = "graph" needs the mailbox\'s address')
        with check():
            if source.auth != "oauth2":
                fail("source.auth", 'kind = "graph" signs in with auth = "oauth2"')
            else:
                _check_oauth(source, fail)
        with check():
            if not source.graph_url.startswith("https://"):
                fail("source.graph_url", "must be an https:// URL")
    elif source.kind == "folder":
        _check_folder(config, fail, check)
    elif not source.path:
        with check():
            fail("source.path", f"kind = {source.kind!r} needs the path of the mail store")
    with check():
        if not source.mailbox:
            fail("source.mailbox", "must not be empty")
    with check():
        if "\r" in source.search or "\n" in source.search:
            fail("source.search", "must be one line of IMAP search criteria")


def _check_folder(config: MonitorConfig, fail: Fail, check: Check) -> None:
    """``kind = "folder"`` and the ``[[types]]`` rules (see docs/folder.md)."""
    source = config.source
    with check():
        if not source.path:
            fail("source.path", 'kind = "folder" needs the folder export files are dropped into')
    with check():
        if source.archive is None:  # no default: a folder nobody chose is no archive
            fail(
                "source.archive",
                'kind = "folder" needs the folder delivered files are moved to',
                'e.g. archive = "/srv/sis/processed", or archive = "" to leave them in place',
            )
    with check():
        if not source.patterns:
            fail("source.patterns", "must list at least one file pattern", 'e.g. ["*.csv"]')
    for index, pattern in enumerate(source.patterns):
        with check():
            if not pattern.strip() or "/" in pattern or "\\" in pattern:
                fail(f"source.patterns[{index}]", "must be a file name pattern such as *.csv")
    with check():
        if source.settle is not None and source.settle < 0:
            fail("source.settle", "must not be negative")
    with check():
        if source.trigger is not None:
            try:
                shown = source.trigger.format(name="x.csv")
            except (KeyError, IndexError, ValueError):
                shown = ""
            if "{name}" not in source.trigger or not shown or "/" in shown:
                fail(
                    "source.trigger", "must be a file name with {name} in it", 'e.g. "{name}.done"'
                )
    with check():
        if source.header_sep == "":
            fail("source.header_sep", "must not be empty", "leave it out to sniff the separator")
    with check():
        if source.export_id is None:
            if len(config.ids) != 1:
                fail("source.export_id", "must say which of ids the dropped files count as")
            source.export_id = config.ids[0]
        elif source.export_id not in config.ids:
            fail("source.export_id", f"export id {source.export_id} is not in ids")
    names: set[str] = set()
    for index, rule in enumerate(config.types):
        key = f"types[{index}]"
        with check():
            if not rule.name.strip() or "/" in rule.name:
                fail(f"{key}.name", "every type needs a name (one word, no /)")
            if rule.name in names:
                fail(f"{key}.name", f"type {rule.name!r} is defined twice")
            names.add(rule.name)
        with check():
            if not (rule.header_has or rule.name_pattern):
                fail(key, "needs header_has or name_pattern to tell its files")
        with check():
            if rule.name_pattern is not None:
                try:
                    re.compile(rule.name_pattern)
                except re.error as exc:
                    fail(f"{key}.name_pattern", f"invalid regular expression: {exc}")


def _check_oauth(source: Any, fail: Fail) -> None:
    """The OAuth2 sign-in settings: a provider that knows its endpoints and the flow."""
    from exportmon.oauth.providers import flow_name, provider_for

    try:
        provider_for(source, flow_name(source))
    except ConfigError as exc:
        fail(exc.key or "source.oauth_provider", exc.message.split(": ", 1)[-1], exc.hint)


def _check_csv(config: MonitorConfig, fail: Fail, check: Check) -> None:
    csv = config.csv
    if csv is None:
        return
    with check():
        if not config.unzip:
            fail("csv", "CSV rewriting needs unzip = true (as in itrp-export-monitor)")
    with check():
        if csv.row_sep == "":
            fail("csv.row_sep", "must not be empty", "leave it out to keep each row's line ending")
    with check():
        if not csv.col_sep:
            fail("csv.col_sep", "must not be empty")
    with check():
        if csv.quote_char in csv.col_sep or (csv.row_sep and csv.quote_char in csv.row_sep):
            fail("csv.quote_char", "must differ from the separators")
    for key in ("encoding", "output_encoding"):
        name = getattr(csv, key)
        with check():
            try:
                codec = codecs.lookup(name)
            except LookupError:
                fail(f"csv.{key}", f"unknown encoding {name!r}", "e.g. utf-8, cp1252, latin-1")
            # hex, rot13, base64, zlib ... are codecs between bytes (or str) and the same.
            if not getattr(codec, "_is_text_encoding", True):
                fail(
                    f"csv.{key}",
                    f"{name!r} is not a text encoding",
                    "e.g. utf-8, cp1252, latin-1",
                )
    with check():
        if csv.value_hook is not None:
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", csv.value_hook):
                fail(
                    "csv.value_hook", "must look like module:function", 'e.g. "myhooks:clean_value"'
                )
            reason = value_hook.refused_reason(csv.value_hook)
            if reason:
                fail("csv.value_hook", reason, "write the function in a module of your own")


def _check_deliver(config: MonitorConfig, fail: Fail, check: Check) -> None:
    deliver = config.deliver
    if deliver.ftp_url:
        with check():
            from exportmon.deliver.ftp import FtpAddress

            try:
                FtpAddress.parse(deliver.ftp_url)
            except UsageError as exc:
                fail(
                    "deliver.ftp_url",
                    exc.message,
                    "e.g. ftps://ftp.example.com:21 (user and folder go in ftp_user and ftp_dir)"
                    if exc.message.startswith("not an ftp")
                    else exc.hint,
                )
            # A plain ftp:// server is warned about where it is used (deliver.ftp), not here.
        with check():
            if deliver.ftp_user:
                _require_secret(deliver, "ftp_password", "deliver.", fail)
        with check():
            if ".." in re.split(r"[/\\]", deliver.ftp_dir):
                fail(
                    "deliver.ftp_dir",
                    "must not contain '..'",
                    "name the folder from the login folder down, or //absolute/path",
                )
    else:
        with check():
            if deliver.ftp_user or deliver.ftp_password or deliver.ftp_dir != ".":
                fail("deliver.ftp_url", "FTP options are set but ftp_url is missing")
    with check():
        if deliver.ftp_retries < 0:
            fail("deliver.ftp_retries", "must not be negative")
    if config.deliver_list is None:
        with check():
            if deliver.to:
                _parse_url(deliver.to, "deliver.to", fail)
    for destination in config.deliver_list or []:
        with check():
            _check_destination(destination, destination.key.rstrip("."), fail, check)


def _parse_url(url: str, key: str, fail: Fail) -> Any:
    from exportmon.deliver.urls import parse_destination_url

    try:
        return parse_destination_url(url)
    except UsageError as exc:
        fail(key, exc.message, exc.hint)


def _check_destination(destination: DestinationConfig, key: str, fail: Fail, check: Check) -> None:
    if not destination.url:
        fail(f"{key}.url", "every destination needs a url", 'e.g. url = "/srv/in"')
    url = _parse_url(destination.url, f"{key}.url", fail)
    with check():
        if url.remote and ".." in url.path.split("/"):
            fail(
                f"{key}.url",
                "the folder must not contain '..'",
                "name the folder the files go to as it is",
            )
    with check():
        if destination.retries < 0:
            fail(f"{key}.retries", "must not be negative")
    with check():
        if destination.trigger is None and destination.trigger_content:
            fail(f"{key}.trigger_content", 'needs trigger = "file" or "export"')
    with check():
        if url.kind == "file" and destination.ca_file:
            fail(f"{key}.ca_file", "a local folder has no TLS")
    for name in ("status_done", "status_fail", "status_warn"):
        with check():
            if getattr(destination, name) and not destination.status_url:
                fail(f"{key}.{name}", "needs status_url")
    for f in dataclasses.fields(destination):
        kinds = f.metadata.get("applies_to")
        with check():
            if kinds and url.kind not in kinds and _is_set(destination, f):
                schemes = " or ".join(f"{kind}://" for kind in kinds)
                fail(f"{key}.{toml_name(f)}", f"applies only to {schemes} destinations")
    for name in ("temp_suffix", "temp_prefix", "trigger_name", "manifest_name"):
        value = getattr(destination, name)
        with check():
            # "." is a fine prefix (a hidden file), never a whole name.
            whole = name in ("trigger_name", "manifest_name")
            dots = whole and value in (".", "..")
            if "/" in value or "\\" in value or dots or not value.isprintable():
                fail(f"{key}.{name}", "must be part of a file name (no / or control characters)")
    from exportmon.deliver.signals import check_template

    for name in ("trigger_name", "manifest_name"):
        with check():
            try:
                check_template(getattr(destination, name), name)
            except UsageError as exc:
                fail(f"{key}.{name}", exc.message, exc.hint)
    if url.kind in ("https", "http"):
        for name in ("trigger", "manifest", "temp_prefix", "temp_dir"):
            with check():
                if getattr(destination, name):
                    fail(
                        f"{key}.{name}",
                        "an HTTPS destination takes each file in one request: it has no "
                        "temporary names, triggers or manifests",
                        "use status_url to learn when the receiving system has processed it",
                    )
    with check():
        if not (destination.temp_suffix or destination.temp_prefix or destination.temp_dir):
            fail(
                f"{key}.temp_suffix",
                "a file would be written under its final name while it is incomplete",
                "keep temp_suffix, or set temp_prefix or temp_dir",
            )
    for name, value in destination.headers.items():
        with check():
            if any(c in name + value for c in "\r\n\0"):
                fail(f"{key}.headers.{name}", "a header holds a line break")
    _check_https(destination, url.kind, key, fail, check)


def check_flag_destination(
    destination: DestinationConfig, flag: typing.Callable[[str], str]
) -> None:
    """The checks of a ``[[deliver]]`` entry, for one made of command-line options: the
    first problem as a :class:`UsageError` naming the option (``flag(key)``)."""

    def fail(key: str, message: str, hint: str | None = None) -> typing.NoReturn:
        name = key.rpartition(".")[2]
        message = message.removeprefix(f"{name}: ")
        raise UsageError(f"{flag(name)}: {message}", hint=hint)

    _check_destination(destination, "", fail, contextlib.nullcontext)


def _check_https(
    destination: DestinationConfig, kind: str, key: str, fail: Fail, check: Check
) -> None:
    """The HTTPS options: the reference pattern and the status conditions parse."""
    from exportmon.deliver.conditions import ConditionError, parse_condition
    from exportmon.deliver.https import check_reference

    if kind not in ("https", "http"):
        return
    with check():
        if destination.reference is not None:
            problem = check_reference(destination.reference)
            if problem:
                fail(f"{key}.reference", problem, "e.g. 'reference code (?P<ref>[0-9a-f]{32})'")
    with check():
        status_url = destination.status_url or ""
        if status_url and not status_url.lower().startswith(("https://", "http://")):
            fail(f"{key}.status_url", "must be an https:// (or http://) address")
    for name in ("status_done", "status_fail", "status_warn"):
        text = getattr(destination, name)
        with check():
            try:
                if text is not None:
                    parse_condition(text)
            except ConditionError as exc:
                fail(f"{key}.{name}", exc.message, exc.hint)
    with check():
        if destination.token_source().configured and destination.password_source().configured:
            fail(f"{key}.token", "set either a token or a password, not both")


def _is_set(table: Any, f: dataclasses.Field[Any]) -> bool:
    """Whether field ``f`` of ``table`` differs from its default (paths compared as
    they are resolved)."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    value = getattr(table, f.name)
    if f.metadata.get("path") and isinstance(default, str) and isinstance(value, str):
        default, value = (str(Path(os.path.expandvars(v)).expanduser()) for v in (default, value))
    return bool(value != default)


def _local_folders(config: MonitorConfig) -> list[tuple[str, str]]:
    """``(key, absolute folder)`` of every local folder files are written to."""
    from exportmon.deliver.urls import parse_destination_url

    if config.deliver_list is None:
        deliver = config.deliver
        return [
            (k, v)
            for k, v in (("deliver.to", deliver.to), ("deliver.archive_dir", deliver.archive_dir))
            if v
        ]
    found = []
    for destination in config.deliver_list:
        try:
            url = parse_destination_url(destination.url)
        except UsageError:
            continue  # named by _check_destination
        if url.kind != "file":
            continue
        found.append((destination.key + "url", url.path))
        if destination.temp_dir:
            temp = Path(os.path.expandvars(destination.temp_dir)).expanduser()
            found.append((destination.key + "temp_dir", str(Path(url.path) / temp)))
    return found


def _check_state_folder(config: MonitorConfig, fail: Fail, check: Check) -> None:
    """No destination folder is the monitor's state folder, one of the folders and files
    exportmon keeps in it, or around it: a delivered ``ledger.sqlite`` must never
    replace the ledger. A folder of its own inside it (``<root>/delivered``, which
    ``generate`` used to write) is fine."""
    root = Path(os.path.realpath(config.root or ""))
    for key, folder in _local_folders(config):
        target = Path(os.path.realpath(folder))
        with check():
            if target == root:
                where = "is the monitor's state folder"
            elif root in target.parents and (
                target.relative_to(root).parts[0] in MonitorDirs.OWN_NAMES
            ):
                where = f"is inside exportmon's own part of the state folder {root}"
            elif root in target.parents:
                continue
            elif target in root.parents:
                where = f"holds the monitor's state folder {root}"
            else:
                continue
            fail(key, f"{folder} {where}", "deliver to a folder of its own, apart from root")


def _check_alerts(config: MonitorConfig, fail: Fail, check: Check) -> None:
    alerts = config.alerts
    if alerts.smtp_url:
        with check():
            if not re.fullmatch(r"(smtp|smtps|submission)://[^/\s]+/?", alerts.smtp_url):
                fail(
                    "alerts.smtp_url",
                    f"not an SMTP server address: {alerts.smtp_url!r}",
                    "use smtp://host:25, smtps://host:465 or submission://host:587",
                )
        with check():
            if not alerts.to:
                fail("alerts.to", "smtp_url is set but nobody receives the alerts")
        oauth2 = alerts.smtp_auth == "oauth2"
        with check():
            if oauth2 and config.source.auth != "oauth2":
                fail(
                    "alerts.smtp_auth",
                    'smtp_auth = "oauth2" uses the mailbox\'s sign-in, but [source] auth is '
                    f"{config.source.auth!r}",
                    'set [source] auth = "oauth2" (and run exportmon login), or use a password',
                )
        with check():
            if oauth2 and alerts.smtp_password_source().configured:
                fail("alerts.smtp_auth", 'smtp_auth = "oauth2" takes no SMTP password')
        with check():
            if alerts.smtp_user and not oauth2:
                _require_secret(alerts, "smtp_password", "alerts.", fail)
    elif alerts.to and not alerts.command:
        with check():
            fail("alerts.smtp_url", "alert recipients are set but no smtp_url to send through")
    for index, url in enumerate(alerts.notify):
        with check():
            if "://" not in url:
                fail(f"alerts.notify[{index}]", "not an Apprise URL (scheme://...)")
    with check():
        if alerts.notify and not apprise_channels.installed():
            fail(
                "alerts.notify",
                "needs Apprise, which is not installed",
                apprise_channels.EXTRA_HINT,
            )


def _check_heartbeat(config: MonitorConfig, fail: Fail, check: Check) -> None:
    heartbeat = config.heartbeat
    if heartbeat.url and not re.match(r"https?://[^/\s]+", heartbeat.url):
        fail("heartbeat.url", "not an http:// or https:// URL")


def _check_schedule(value: str, key: str, fail: Fail) -> None:
    try:
        parse_schedule(value)
    except ValueError as exc:
        fail(key, str(exc))


def _secret_keys(config: MonitorConfig) -> list[str]:
    """The keys of the secrets written in the file itself."""
    return sorted({s.key for s in config.secret_sources() if s.value is not None})


def _check_permissions(config: MonitorConfig, path: Path, *, strict: bool) -> None:
    secrets = _secret_keys(config)
    if not secrets or os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    message = (
        f"holds a plain secret ({', '.join(secrets)}) but is readable by others (mode {mode:04o})"
    )
    hint = f"chmod 600 {path}, or use *_password_env / *_password_command"
    if strict:
        raise ConfigError(message, path=path, hint=hint)
    log.warning("%s: %s (%s)", path, message, hint)


def _check_hook_permissions(config: MonitorConfig, path: Path, *, strict: bool) -> None:
    """A value hook is code: its module must be writable by its owner only."""
    if config.csv is None or not config.csv.value_hook:
        return
    unsafe = value_hook.writable_by_others(config.csv.value_hook, path.parent)
    if not unsafe:
        return
    where, mode = unsafe[0]
    message = f"the hook runs code, but {where} can be changed by group or others (mode {mode:04o})"
    hint = f"chmod go-w {where}"
    if strict:
        raise ConfigError(message, path=path, key="csv.value_hook", hint=hint)
    log.warning("%s: csv.value_hook: %s (%s; --strict refuses it)", path, message, hint)
