"""Finding, reading and validating monitor configs.

Validation happens once, here: a config that loads is one the rest of exportmon
can trust. Every problem is a :class:`ConfigError` whose message names the file,
the key and what is allowed; unknown keys get a "did you mean" suggestion (also
for the option names of the itrp-export-monitor gem).
"""

from __future__ import annotations

import codecs
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
from pathlib import Path
from typing import Any, Literal

from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.errors import ConfigError
from exportmon.notify import apprise as apprise_channels
from exportmon.paths import monitors_dir, state_dir
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
                hint="create one with: exportmon generate <export-id> <email> <password>",
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

    ``strict`` refuses a file that holds a plain secret and is readable by group
    or others (otherwise that is a loud warning).
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
    config = parse(data, path=path)
    _check_permissions(config, path, strict=strict)
    return config


def parse(data: dict[str, Any], *, path: Path, name: str | None = None) -> MonitorConfig:
    """Validate parsed TOML ``data`` into a :class:`MonitorConfig`.

    Relative paths in the config are taken relative to the file's directory.
    """
    deliver = data.get("deliver")
    entries: list[DestinationConfig] | None = None
    if isinstance(deliver, list):
        # [[deliver]]: an array of destinations; [deliver]: the old single table.
        data = {k: v for k, v in data.items() if k != "deliver"}
        entries = [
            _build(DestinationConfig, entry, path, f"deliver[{i}].")
            for i, entry in enumerate(deliver)
        ]
    config = _build(MonitorConfig, data, path, prefix="")
    for i, entry in enumerate(entries or []):
        entry.key = f"deliver[{i}]."
    config.deliver_list = entries
    config.name = name or path.stem
    config.path = path
    _resolve_paths(config, path.parent)
    _check_semantics(config, path)
    return config


# --- structural validation, driven by the dataclass field types -----------------------


def _toml_name(f: dataclasses.Field) -> str:
    return f.metadata.get("toml", f.name)


def _build(cls: type, data: Any, path: Path, prefix: str) -> Any:
    where = prefix.rstrip(".") or None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table, got {_describe(data)}", path=path, key=where)
    fields = {_toml_name(f): f for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                "unknown option",
                path=path,
                key=prefix + key,
                hint=_suggest(key, prefix, list(fields)),
            )
    values = {}
    for toml_key, f in fields.items():
        if toml_key in data:
            values[f.name] = _convert(
                data[toml_key], hints[f.name], f.metadata, path, prefix + toml_key
            )
    return cls(**values)


def _suggest(key: str, prefix: str, known: list[str]) -> str:
    if not prefix and key in GEM_OPTION_NAMES:
        return f"the gem's {key!r} is {GEM_OPTION_NAMES[key]} in exportmon"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix + close[0]!r}?"
    return "allowed here: " + ", ".join(sorted(known))


def _convert(value: Any, tp: Any, meta: typing.Mapping, path: Path, key: str) -> Any:
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
        return _convert(value, inner, meta, path, key)
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
        return [_convert(v, args[0], {}, path, f"{key}[{i}]") for i, v in enumerate(value)]
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
            result[converted_key] = _convert(v, value_type, {}, path, f"{key}.{k}")
        return result
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key + ".")
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


def _resolve_paths(config: MonitorConfig, base: Path) -> None:
    def resolve(value: str | None) -> str | None:
        if not value:
            return value
        candidate = Path(os.path.expandvars(value)).expanduser()
        return str(candidate if candidate.is_absolute() else (base / candidate).resolve())

    config.root = resolve(config.root) or str(state_dir() / config.name)
    config.source.path = resolve(config.source.path)
    config.source.ca_file = resolve(config.source.ca_file)
    config.download.ca_file = resolve(config.download.ca_file)
    config.deliver.to = resolve(config.deliver.to)
    config.deliver.archive_dir = resolve(config.deliver.archive_dir)
    config.deliver.ftp_ca_file = resolve(config.deliver.ftp_ca_file)
    config.alerts.smtp_ca_file = resolve(config.alerts.smtp_ca_file)
    for destination in config.deliver_list or []:
        if "://" not in destination.url:
            destination.url = resolve(destination.url) or ""
        for f in dataclasses.fields(destination):
            if f.metadata.get("path"):
                setattr(destination, f.name, resolve(getattr(destination, f.name)))


def _check_semantics(config: MonitorConfig, path: Path) -> None:
    def fail(key: str, message: str, hint: str | None = None) -> typing.NoReturn:
        raise ConfigError(message, path=path, key=key, hint=hint)

    if not config.ids:
        fail("ids", "at least one export id is required", "e.g. ids = [777]")
    for i, export_id in enumerate(config.ids):
        if export_id <= 0:
            fail(f"ids[{i}]", f"export ids are positive numbers, got {export_id}")
    if len(set(config.ids)) != len(config.ids):
        fail("ids", "an export id is listed twice")
    for export_id in config.exports:
        if export_id not in config.ids:
            fail(f"exports.{export_id}", "export id is not in ids", f"add {export_id} to ids")
    if config.exit_when_idle < 0:
        fail("exit_when_idle", "must be 0 (never) or a number of minutes")
    for key, value, least in (
        ("source.port", config.source.port, 0),
        ("download.retries", config.download.retries, 0),
        ("download.max_redirects", config.download.max_redirects, 0),
        ("zip.max_entries", config.zip.max_entries, 1),
        ("zip.max_ratio", config.zip.max_ratio, 1),
    ):
        if value < least:
            fail(key, f"must be at least {least}, got {value}")
    if config.source.port > 65535:
        fail("source.port", f"not a port number: {config.source.port}")

    _check_source(config, fail)
    _check_csv(config, fail)
    _check_deliver(config, fail)
    _check_alerts(config, fail)
    _check_heartbeat(config, fail)
    for export_id, expectation in config.exports.items():
        if expectation.expect_every is not None:
            _check_schedule(expectation.expect_every, f"exports.{export_id}.expect_every", fail)
        for table in ("min_rows", "max_rows"):
            for export_type, rows in getattr(expectation, table).items():
                if rows < 0:
                    fail(f"exports.{export_id}.{table}.{export_type}", "must not be negative")
    for i, recognizer in enumerate(config.recognizers):
        key = f"recognizers[{i}]"
        if not recognizer.name:
            fail(f"{key}.name", "every recognizer needs a name")
        if not (recognizer.id_header or recognizer.subject_pattern or recognizer.export_id):
            fail(
                key, "needs id_header, subject_pattern or export_id to tell which export a mail is"
            )
        for attr in ("subject_pattern", "link_pattern"):
            pattern = getattr(recognizer, attr)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    fail(f"{key}.{attr}", f"invalid regular expression: {exc}")
    for key, value in (
        ("source.ca_file", config.source.ca_file),
        ("download.ca_file", config.download.ca_file),
        ("deliver.ftp_ca_file", config.deliver.ftp_ca_file),
        ("alerts.smtp_ca_file", config.alerts.smtp_ca_file),
    ):
        if value and not Path(value).is_file():
            fail(key, f"file not found: {value}")


def _check_one_secret(prefix: str, values: dict[str, Any], fail: Any, *, required: bool) -> None:
    configured = [k for k, v in values.items() if v is not None]
    if len(configured) > 1:
        fail(prefix, "set only one of " + ", ".join(configured))
    if required and not configured:
        fail(
            prefix.rsplit(".", 1)[0] + "." + next(iter(values)),
            "missing password",
            "set {1} or {2} to keep it out of this file, or {0}".format(*values),
        )


def _check_source(config: MonitorConfig, fail: Any) -> None:
    source = config.source
    if source.kind in ("imap", "pop3"):
        if not source.host:
            fail("source.host", f"the {source.kind.upper()} server address is required")
        if not source.user:
            fail("source.user", "the user name for the mail server is required")
        if not 0 <= source.port <= 65535:
            fail("source.port", f"not a port number: {source.port}")
        if source.auth == "password":
            _check_one_secret(
                "source",
                {
                    "password": source.password,
                    "password_env": source.password_env,
                    "password_command": source.password_command,
                },
                fail,
                required=True,
            )
        elif source.auth == "oauth2":
            _check_oauth(source, fail)
        elif not source.token_command:
            fail(
                "source.token_command",
                f"auth = {source.auth!r} needs a command that prints an OAuth2 token",
            )
        if source.kind == "pop3" and source.auth == "oauthbearer":
            fail("source.auth", "POP3 supports only password and xoauth2 logins")
        if source.security == "plain":
            log.warning(
                '%s: source.security = "plain": the mail password travels unencrypted',
                config.path,
            )
    elif source.kind == "graph":
        if not source.user:
            fail("source.user", 'kind = "graph" needs the mailbox\'s address')
        if source.auth != "oauth2":
            fail("source.auth", 'kind = "graph" signs in with auth = "oauth2"')
        else:
            _check_oauth(source, fail)
        if not source.graph_url.startswith("https://"):
            fail("source.graph_url", "must be an https:// URL")
    elif not source.path:
        fail("source.path", f"kind = {source.kind!r} needs the path of the mail store")
    if not source.mailbox:
        fail("source.mailbox", "must not be empty")
    if "\r" in source.search or "\n" in source.search:
        fail("source.search", "must be one line of IMAP search criteria")


def _check_oauth(source: Any, fail: Any) -> None:
    """The OAuth2 sign-in settings: a provider that knows its endpoints and the flow."""
    from exportmon.oauth.providers import flow_name, provider_for

    _check_one_secret(
        "source",
        {
            "oauth_client_secret": source.oauth_client_secret,
            "oauth_client_secret_env": source.oauth_client_secret_env,
            "oauth_client_secret_command": source.oauth_client_secret_command,
        },
        fail,
        required=False,
    )
    try:
        provider_for(source, flow_name(source))
    except ConfigError as exc:
        fail(exc.key or "source.oauth_provider", exc.message.split(": ", 1)[-1], exc.hint)


def _check_csv(config: MonitorConfig, fail: Any) -> None:
    csv = config.csv
    if csv is None:
        return
    if not config.unzip:
        fail("csv", "CSV rewriting needs unzip = true (as in itrp-export-monitor)")
    if csv.row_sep == "":
        fail("csv.row_sep", "must not be empty", "leave it out to keep each row's line ending")
    if not csv.col_sep:
        fail("csv.col_sep", "must not be empty")
    if csv.quote_char in csv.col_sep or (csv.row_sep and csv.quote_char in csv.row_sep):
        fail("csv.quote_char", "must differ from the separators")
    for key in ("encoding", "output_encoding"):
        try:
            codecs.lookup(getattr(csv, key))
        except LookupError:
            fail(
                f"csv.{key}",
                f"unknown encoding {getattr(csv, key)!r}",
                "e.g. utf-8, cp1252, latin-1",
            )
    if csv.value_hook is not None and not re.fullmatch(
        r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", csv.value_hook
    ):
        fail("csv.value_hook", "must look like module:function", 'e.g. "myhooks:clean_value"')


def _check_deliver(config: MonitorConfig, fail: Any) -> None:
    deliver = config.deliver
    if deliver.ftp_url:
        match = re.fullmatch(
            r"(ftps?)://([^/:@\s]+|\[[0-9a-fA-F:]+\])(?::(\d+))?/?", deliver.ftp_url
        )
        if not match:
            fail(
                "deliver.ftp_url",
                f"not an ftp:// or ftps:// server address: {deliver.ftp_url!r}",
                "e.g. ftps://ftp.example.com:21 (user and folder go in ftp_user and ftp_dir)",
            )
        if match.group(3) and not 0 < int(match.group(3)) <= 65535:
            fail("deliver.ftp_url", f"not a port number: {match.group(3)}")
        secret_values = {
            "ftp_password": deliver.ftp_password,
            "ftp_password_env": deliver.ftp_password_env,
            "ftp_password_command": deliver.ftp_password_command,
        }
        _check_one_secret("deliver", secret_values, fail, required=bool(deliver.ftp_user))
        if match.group(1) == "ftp":
            log.warning(
                "%s: deliver.ftp_url is ftp://, not ftps://: the FTP password and the files "
                "travel unencrypted",
                config.path,
            )
    elif deliver.ftp_user or deliver.ftp_password or deliver.ftp_dir != ".":
        fail("deliver.ftp_url", "FTP options are set but ftp_url is missing")
    if deliver.ftp_retries < 0:
        fail("deliver.ftp_retries", "must not be negative")
    for i, destination in enumerate(config.destinations):
        _check_destination(destination, f"deliver[{i}]", fail)


def _check_destination(destination: DestinationConfig, key: str, fail: Any) -> None:
    from exportmon.deliver.urls import parse_destination_url
    from exportmon.errors import UsageError

    if not destination.url:
        fail(f"{key}.url", "every destination needs a url", 'e.g. url = "/srv/in"')
    try:
        url = parse_destination_url(destination.url)
    except UsageError as exc:
        fail(f"{key}.url", exc.message, exc.hint)
    for secret in ("password", "token", "ssh_key_passphrase"):
        values = {
            name: getattr(destination, name)
            for name in (secret, f"{secret}_env", f"{secret}_command")
        }
        _check_one_secret(key, values, fail, required=False)
    if destination.retries < 0:
        fail(f"{key}.retries", "must not be negative")
    if destination.trigger is None and destination.trigger_content:
        fail(f"{key}.trigger_content", 'needs trigger = "file" or "export"')
    if url.kind == "file" and destination.ca_file:
        fail(f"{key}.ca_file", "a local folder has no TLS")
    if destination.ca_file and not Path(destination.ca_file).is_file():
        fail(f"{key}.ca_file", f"file not found: {destination.ca_file}")
    for name in ("status_done", "status_fail", "status_warn"):
        if getattr(destination, name) and not destination.status_url:
            fail(f"{key}.{name}", "needs status_url")
    _check_https(destination, url.kind, key, fail)


def _check_https(destination: DestinationConfig, kind: str, key: str, fail: Any) -> None:
    """The HTTPS options: the reference pattern and the status conditions parse."""
    from exportmon.deliver.conditions import ConditionError, parse_condition
    from exportmon.deliver.https import check_reference

    if kind not in ("https", "http"):
        return
    if destination.reference is not None:
        problem = check_reference(destination.reference)
        if problem:
            fail(f"{key}.reference", problem, "e.g. 'reference code (?P<ref>[0-9a-f]{32})'")
    status_url = destination.status_url or ""
    if status_url and not status_url.lower().startswith(("https://", "http://")):
        fail(f"{key}.status_url", "must be an https:// (or http://) address")
    for name in ("status_done", "status_fail", "status_warn"):
        text = getattr(destination, name)
        try:
            if text is not None:
                parse_condition(text)
        except ConditionError as exc:
            fail(f"{key}.{name}", exc.message, exc.hint)
    if destination.token_source().configured and destination.password_source().configured:
        fail(f"{key}.token", "set either a token or a password, not both")


def _check_alerts(config: MonitorConfig, fail: Any) -> None:
    alerts = config.alerts
    if alerts.smtp_url:
        if not re.fullmatch(r"(smtp|smtps|submission)://[^/\s]+/?", alerts.smtp_url):
            fail(
                "alerts.smtp_url",
                f"not an SMTP server address: {alerts.smtp_url!r}",
                "use smtp://host:25, smtps://host:465 or submission://host:587",
            )
        if not alerts.to:
            fail("alerts.to", "smtp_url is set but nobody receives the alerts")
        secret_values = {
            "smtp_password": alerts.smtp_password,
            "smtp_password_env": alerts.smtp_password_env,
            "smtp_password_command": alerts.smtp_password_command,
        }
        _check_one_secret("alerts", secret_values, fail, required=bool(alerts.smtp_user))
    elif alerts.to and not alerts.command:
        fail("alerts.smtp_url", "alert recipients are set but no smtp_url to send through")
    _check_one_secret(
        "alerts",
        {
            "notify": alerts.notify or None,
            "notify_env": alerts.notify_env,
            "notify_command": alerts.notify_command,
        },
        fail,
        required=False,
    )
    for index, url in enumerate(alerts.notify):
        if "://" not in url:
            fail(f"alerts.notify[{index}]", "not an Apprise URL (scheme://...)")
    if alerts.notify and not apprise_channels.installed():
        fail("alerts.notify", "needs Apprise, which is not installed", apprise_channels.EXTRA_HINT)


def _check_heartbeat(config: MonitorConfig, fail: Any) -> None:
    heartbeat = config.heartbeat
    _check_one_secret(
        "heartbeat",
        {"url": heartbeat.url, "url_env": heartbeat.url_env, "url_command": heartbeat.url_command},
        fail,
        required=False,
    )
    if heartbeat.url and not re.match(r"https?://[^/\s]+", heartbeat.url):
        fail("heartbeat.url", "not an http:// or https:// URL")


def _check_schedule(value: str, key: str, fail: Any) -> None:
    try:
        parse_schedule(value)
    except ValueError as exc:
        fail(key, str(exc))


def _secret_keys(config: MonitorConfig) -> list[str]:
    found = []
    for table_name in ("source", "deliver", "alerts", "heartbeat"):
        table = getattr(config, table_name)
        for f in dataclasses.fields(table):
            if f.metadata.get("secret") and getattr(table, f.name) not in (None, []):
                found.append(f"{table_name}.{f.name}")
    for i, destination in enumerate(config.destinations):
        for f in dataclasses.fields(destination):
            if f.metadata.get("secret") and getattr(destination, f.name) not in (None, []):
                found.append(f"deliver[{i}].{f.name}")
    return sorted(set(found))


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
