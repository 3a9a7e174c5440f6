"""Hostile and broken monitor configs: every wrong type, unknown keys, secrets, unreadable files.

A broken config sits beside the good monitor (``777.toml``); ``run --once`` must
name the broken file and key in one line, exit 2, and still run the good monitor.
:data:`WRONG_TYPES` holds one wrong value for every option of the schema; they are
checked together in one run (see ``test_hostile.py``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from fetchkit import toml

from exportmon.config.schema import (
    AlertsConfig,
    CsvConfig,
    DeliverConfig,
    DownloadConfig,
    ExportExpectation,
    MonitorConfig,
    RecognizerConfig,
    SourceConfig,
    ZipConfig,
)

from .cases import Case, Scene

#: A valid monitor the broken ones are variations of (a dir source, nothing to do).
BASE: dict[str, Any] = {"ids": [5], "source": {"kind": "dir", "path": "."}}

TABLES: dict[str, type] = {
    "": MonitorConfig,
    "source": SourceConfig,
    "download": DownloadConfig,
    "zip": ZipConfig,
    "csv": CsvConfig,
    "deliver": DeliverConfig,
    "alerts": AlertsConfig,
    "recognizers": RecognizerConfig,
    "exports.5": ExportExpectation,
}


def _wrong_value(annotation: Any, kind: str | None) -> object:
    """A value of the wrong type for an option declared as ``annotation``."""
    if kind in ("duration", "size"):
        return [1, 2]
    if kind == "char":
        return 7
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Literal:
        return "no-such-choice"
    if origin in (list, dict):
        return "not-a-" + origin.__name__
    if origin is not None and len(args) == 1:  # an optional value
        return _wrong_value(args[0], kind)
    if annotation is bool:
        return "yes"
    if annotation in (int, float):
        return "many"
    return 42 if annotation is str else [True]


def wrong_type_configs() -> dict[str, tuple[str, str]]:
    """``{"<table>.<key>": (TOML text, key as the error names it)}`` for every option."""
    hints = typing.get_type_hints
    configs: dict[str, tuple[str, str]] = {}
    for table, cls in TABLES.items():
        types = hints(cls)
        for option in dataclasses.fields(cls):
            if option.metadata.get("derived") or dataclasses.is_dataclass(types[option.name]):
                continue
            if option.name in ("exports", "recognizers") and table == "":
                continue
            key = option.metadata.get("toml", option.name)
            value = _wrong_value(types[option.name], option.metadata.get("kind"))
            data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
            if table == "":
                data[key] = value
                named = key
            elif table == "recognizers":
                data["recognizers"] = [{"name": "x", key: value}]
                named = f"recognizers[0].{key}"
            elif table == "exports.5":
                data["exports"] = {"5": {key: value}}
                named = f"exports.5.{key}"
            else:
                data.setdefault(table, {})[key] = value
                named = f"{table}.{key}"
            configs[named] = (_toml_text(data), named)
    return configs


def _toml_text(data: dict[str, Any]) -> str:
    exports = data.pop("exports", None)
    text = toml(data)
    for export_id, table in (exports or {}).items():
        text += f"\n[exports.{export_id}]\n" + toml(table)
    return text


WRONG_TYPES = wrong_type_configs()


def _broken(text: str, *, mode: int = 0o600, name: str = "bad.toml"):
    def build(scene: Scene) -> None:
        scene.extra_configs[name] = (text, mode)

    return build


def _valid_bad(extra: str = "", *, top: str = "", mode: int = 0o600, strict: bool = False):
    """A valid second monitor (reading the same mailbox) with ``extra`` TOML appended
    (and ``top`` at the top level)."""

    def build(scene: Scene) -> None:
        text = (
            f'ids = [5]\nroot = "{scene.base / "state-bad"}"\n{top}'
            f'[source]\nkind = "dir"\npath = "{scene.mails}"\narchive = ""\n{extra}'
        )
        scene.extra_configs["bad.toml"] = (text, mode)
        scene.writable.append(scene.base / "state-bad")
        if strict:
            scene.options.append("--strict")

    return build


def _directory_as_config(scene: Scene) -> None:
    (scene.base / "monitors" / "bad.toml").mkdir(parents=True)
    scene.extra_configs["bad.toml"] = ("", 0o700)


def _dangling_symlink(scene: Scene) -> None:
    (scene.base / "monitors").mkdir(parents=True)
    (scene.base / "monitors" / "bad.toml").symlink_to(scene.base / "nowhere.toml")
    scene.extra_configs["bad.toml"] = ("", 0o600)


def _deep_nesting(scene: Scene) -> None:
    scene.extra_configs["bad.toml"] = ("ids = " + "[" * 100_000 + "]" * 100_000 + "\n", 0o600)


def _binary(scene: Scene) -> None:
    (scene.base / "monitors").mkdir(parents=True)
    (scene.base / "monitors" / "bad.toml").write_bytes(bytes(range(256)) * 10)
    scene.extra_configs["bad.toml"] = ("", 0o600)


IMAP = '[source]\nkind = "imap"\nhost = "127.0.0.1"\nport = 9\nuser = "u"\n'


def _imap_monitor(secret: str):
    def build(scene: Scene) -> None:
        text = f'ids = [5]\nroot = "{scene.base / "state-bad"}"\n{IMAP}{secret}'
        scene.extra_configs["bad.toml"] = (text, 0o600)
        scene.writable.append(scene.base / "state-bad")

    return build


SECRET_LINE = '[alerts]\ncommand = "true"\n[deliver]\nftp_url = "ftp://127.0.0.1:9"\n'
SECRET_LINE += 'ftp_user = "u"\nftp_password = "Sup3r-Secret-In-File"\n'


def config_case(case_id: str, build, message: str, *, code: int = 2) -> Case:
    return Case(case_id, "config", build, code=code, message=message, outcome="none")


CASES = [
    config_case(
        "config-unknown-key",
        _broken('ids = [5]\nbogus_option = 1\n[source]\nkind = "dir"\npath = "."\n'),
        r"bad\.toml: bogus_option: unknown option",
    ),
    config_case(
        "config-unknown-table",
        _broken('ids = [5]\n[sauce]\nkind = "dir"\n'),
        r"bad\.toml: sauce: unknown option",
    ),
    config_case("config-invalid-toml", _broken("ids = [5\n"), r"bad\.toml: invalid TOML"),
    config_case(
        "config-duplicate-key", _broken("ids = [5]\nids = [6]\n"), r"bad\.toml: invalid TOML"
    ),
    config_case("config-deeply-nested", _deep_nesting, r"bad\.toml: "),
    config_case("config-binary-file", _binary, r"bad\.toml: "),
    config_case("config-is-a-directory", _directory_as_config, r"bad\.toml: "),
    config_case("config-dangling-symlink", _dangling_symlink, r"bad\.toml: "),
    config_case(
        "config-missing-secret-env",
        _imap_monitor('password_env = "EXPORTMON_NO_SUCH_VAR"\n'),
        r"source\.password_env: environment variable EXPORTMON_NO_SUCH_VAR is not set",
    ),
    config_case(
        "config-missing-secret-command",
        _imap_monitor('password_command = "exit 3"\n'),
        r"source\.password_command: command exited with status 3",
    ),
    config_case(
        "config-missing-password", _imap_monitor(""), r"source\.password: missing password"
    ),
    config_case(
        "config-world-readable-secret",
        _valid_bad(SECRET_LINE, mode=0o644),
        r"bad\.toml.*readable by others.*chmod 600",
        code=0,
    ),
    config_case(
        "config-world-readable-secret-strict",
        _valid_bad(SECRET_LINE, mode=0o644, strict=True),
        r"bad\.toml.*readable by others",
    ),
    config_case(
        "config-negative-limit",
        _valid_bad("[zip]\nmax_entries = -1\n"),
        r"bad\.toml: zip\.max_entries",
    ),
    config_case(
        "config-bad-unit",
        _valid_bad('[download]\ntimeout = "10 parsecs"\n'),
        r"bad\.toml: download\.timeout",
    ),
    config_case(
        "config-limit-nan",
        _valid_bad("[zip]\nmax_ratio = nan\n"),
        r"bad\.toml: zip\.max_ratio: expected a number, got nan",
    ),
    config_case(
        "config-duration-inf",
        _valid_bad(top="poll_interval = inf\n"),
        r"bad\.toml: poll_interval: inf is not a duration",
    ),
    config_case(
        "config-root-is-a-file",
        _broken('ids = [5]\nroot = "/etc/hostname"\n[source]\nkind = "dir"\npath = "."\n'),
        r"bad\.toml|/etc/hostname",
        code=2,
    ),
]
