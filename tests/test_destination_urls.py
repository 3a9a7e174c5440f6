"""``[[deliver]]`` entries and destination URLs: parsing, the old ``[deliver]`` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportmon.config.load import load_monitor
from exportmon.deliver.kinds import open_destination
from exportmon.deliver.urls import parse_destination_url, split_userinfo
from exportmon.errors import ConfigError, UsageError


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text('ids = [1]\n[source]\nkind = "dir"\npath = "mails"\n' + body)
    path.chmod(0o600)
    return path


def test_an_array_of_destinations_loads_each_with_its_own_options(tmp_path: Path) -> None:
    monitor = load_monitor(
        _write(
            tmp_path,
            '[[deliver]]\nurl = "in"\norder = ["people"]\n'
            '[[deliver]]\nurl = "sftp://exports@sftp.example.com:2222/in/exports"\n'
            'host_key = "SHA256:abc"\n'
            '[[deliver]]\nurl = "https://learn.example.edu/endpoint/{type}/store"\n'
            'status_url = "https://learn.example.edu/dataSetStatus/{reference}"\n'
            'status_done = "queuedCount == 0"\n',
        )
    )
    local, sftp, https = monitor.destinations
    assert local.url == str(tmp_path / "in") and local.order == ["people"]
    url = parse_destination_url(sftp.url)
    assert (url.kind, url.host, url.port, url.user, url.path) == (
        "sftp",
        "sftp.example.com",
        2222,
        "exports",
        "/in/exports",
    )
    assert parse_destination_url(https.url).kind == "https"


def test_the_old_table_becomes_destinations_with_the_labels_ledgers_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X", "pw")
    monitor = load_monitor(
        _write(
            tmp_path,
            '[deliver]\nto = "out"\nftp_url = "ftps://ftp.example.com:2121"\n'
            'ftp_dir = "in/exports"\nftp_user = "bob"\nftp_password_env = "X"\n'
            'archive_dir = "copies"\n',
        )
    )
    labels = [open_destination(d).label for d in monitor.destinations]
    assert labels == [
        f"local:{tmp_path / 'out'}",
        "ftps://ftp.example.com:2121/in/exports",
        f"archive:{tmp_path / 'copies'}",
    ]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sftp://bob:secret@host/in", "password does not belong"),
        ("gopher://host/in", "unknown destination scheme"),
        ("ftp://host:99999/in", "not a port number"),
        ("file://relative", "absolute path"),
        ("sftp://host/in?x=1", "no query"),
    ],
)
def test_a_bad_destination_url_is_one_line_naming_the_key(
    tmp_path: Path, url: str, words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        parse_destination_url(url)
    with pytest.raises(ConfigError) as caught:
        load_monitor(_write(tmp_path, f'[[deliver]]\nurl = "{url}"\n'))
    assert "deliver[0].url" in caught.value.one_line()
    assert "secret" not in caught.value.one_line()


def test_every_scheme_a_url_may_name_has_a_module_that_delivers_to_it() -> None:
    from exportmon.deliver.kinds import KINDS
    from exportmon.deliver.urls import SCHEMES

    assert set(KINDS) == set(SCHEMES)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sftp://bob:s%40cret@h:2222/in", ("sftp://h:2222/in", "bob", "s@cret")),
        ("https://carol@api.example/up?x=1", ("https://api.example/up?x=1", "carol", None)),
        ("ftp://:pw@h/in", ("ftp://h/in", None, "pw")),
        ("sftp://h/in", ("sftp://h/in", None, None)),
        ("/srv/in", ("/srv/in", None, None)),
        ("sftp://bob:pw@", ("sftp://", "bob", "pw")),  # taken apart even when unusable
    ],
)
def test_split_userinfo(url, expected):
    assert split_userinfo(url) == expected
