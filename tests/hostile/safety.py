"""Hostile cases of the safety invariants: identity, planted links, state, bombs, text.

* identity: exports whose tokens or names would have shared a path each keep
  their own bytes (the destination keeps every delivery: ``overwrite = "timestamp"``);
* links: a symbolic link planted at a temporary name, a type sub-folder or a state
  file is never written through;
* state: a ledger with columns this exportmon does not know, a CSV the codec
  refuses as a whole: that export fails, the rest goes on;
* bombs: many small entries that inflate to a bomb together;
* text: escape sequences, bidi overrides and fullwidth digits from senders.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from email.utils import make_msgid
from pathlib import Path

from fetchkit import export_mail

from exportmon.ledger import Ledger

from .cases import GOOD_FILE, Case, Scene
from .zips import zip_bytes

#: Characters that must never reach a terminal, a log file or a file name raw.
RAW = ("\x1b", "\x07", "\u202e")


def _outside(scene: Scene) -> Path:
    """A file outside every folder exportmon may write; checked to stay as it was."""
    victim = scene.base / "outside" / "victim.txt"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text("precious\n")

    def untouched(result) -> None:
        assert victim.read_text() == "precious\n", "written through a planted link"
        assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]

    scene.check(untouched)
    return victim


def _delivered_bodies(scene: Scene, *bodies: bytes) -> None:
    """Check that each of ``bodies`` is in a delivered file of its own."""

    def every_body_delivered(result) -> None:
        found = [p.read_bytes() for p in (scene.delivered / "every").rglob("*") if p.is_file()]
        for body in bodies:
            assert body in found, f"{body!r} was not delivered (found {len(found)} files)"

    scene.check(every_body_delivered)


def _keep_every_delivery(scene: Scene) -> None:
    """Deliver with ``overwrite = "timestamp"`` into a folder of its own, beside the good
    export's (``deliver.archive_dir`` keeps a time-stamped copy of every file)."""
    scene.table("deliver")["archive_dir"] = str(scene.delivered / "every")


# --- identity -------------------------------------------------------------------------


def _tokens(first: str, second: str):
    """Two export mails with tokens ``first`` and ``second``, one attached name."""

    def build(scene: Scene) -> None:
        _keep_every_delivery(scene)
        for token, body in ((first, b"id\nfirst\n"), (second, b"id\nsecond\n")):
            scene.attach("5-9-same.csv", body, token=token, message_id=make_msgid())
        _delivered_bodies(scene, b"id\nfirst\n", b"id\nsecond\n")

    return build


def _attachments(*names: str):
    """One mail attaching a different body under each of ``names``."""

    def build(scene: Scene) -> None:
        _keep_every_delivery(scene)
        bodies = [f"id\n{n}\n".encode() for n in range(len(names))]
        scene.export(attachments=list(zip(names, bodies, strict=True)))
        _delivered_bodies(scene, *bodies)

    return build


def _disposition_like_metadata(scene: Scene) -> None:
    server = scene.web
    scene.allow_local()
    body = b"id\nnamed like the resume metadata\n"
    for name in (".download.part.json", "download.part.json", ".download.part"):
        url = server.add(
            f"/dl/{len(scene.hostile)}",
            body + name.encode(),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        scene.export(url, message_id=make_msgid())
    _keep_every_delivery(scene)
    _delivered_bodies(scene, *(body + n.encode() for n in ("download.part.json", ".download.part")))


# --- planted links --------------------------------------------------------------------


def _link_at_in_progress(scene: Scene) -> None:
    victim = _outside(scene)
    scene.delivered.mkdir()
    (scene.delivered / f"{GOOD_FILE}.in_progress").symlink_to(victim)
    scene.attach("5-9-next.csv", b"id\nnext\n")
    (scene.delivered / "5-9-next.csv.in_progress").symlink_to(victim)


def _link_as_type_folder(scene: Scene) -> None:
    victim = _outside(scene)
    scene.config["sub_dirs"] = True
    scene.delivered.mkdir()
    (scene.delivered / "sites").symlink_to(victim.parent)
    scene.attach("5-9-sites.csv", b"id\nsite\n")
    raw = export_mail(
        token="good-sub", message_id=make_msgid(), attachments=[("5-1-good.csv", b"id\n1\n")]
    )
    (scene.mails / "good-sub.eml").write_bytes(raw)

    def good_in_its_folder(result) -> None:
        assert (scene.delivered / "good" / "5-1-good.csv").read_bytes() == b"id\n1\n"

    scene.check(good_in_its_folder)


def _state_link(relative: str, *, mail: bool = True):
    def build(scene: Scene) -> None:
        victim = _outside(scene)
        path = scene.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(victim)
        if mail:
            scene.attach("5-9-next.csv", b"id\nnext\n")

    return build


# --- state ----------------------------------------------------------------------------


def _ledger_with_extra_columns(scene: Scene) -> None:
    scene.root.mkdir(parents=True)
    path = scene.root / "ledger.sqlite"
    Ledger.open(path).close()
    with sqlite3.connect(path) as db:
        for table in ("mails", "exports", "files", "runs"):
            db.execute(f"ALTER TABLE {table} ADD COLUMN added_by_a_newer_version TEXT")


def _utf16_without_bom(scene: Scene) -> None:
    scene.config["unzip"] = True
    scene.table("csv").update({"encoding": "utf-16", "col_sep": ";"})
    scene.attach("5-9-nobom.csv", "id,name\n1,x\n".encode("utf-16-le"))
    good = export_mail(
        token="good-0001",
        message_id=make_msgid(domain="good.example"),
        attachments=[(GOOD_FILE, "id,name\n1,good\n".encode("utf-16"))],
    )
    (scene.mails / "good.eml").write_bytes(good)


# --- bombs ----------------------------------------------------------------------------


def _many_small_entries() -> bytes:
    zeros = b"\0" * 1_000_000
    return zip_bytes([(f"5-12-part-{n:04d}.csv", zeros) for n in range(1000)])


def _many_small_bomb(scene: Scene) -> None:
    scene.attach("5-12-export.zip", _many_small_entries())


# --- text from senders ----------------------------------------------------------------


def _nothing_raw(scene: Scene) -> None:
    def no_raw_characters(result) -> None:
        for log in scene.root.glob("log/*"):
            text = log.read_text(errors="replace")
            assert not any(c in text for c in RAW), f"raw control characters in {log.name}"
        for path in scene.delivered.rglob("*"):
            assert unicodedata.category(path.name[0]) != "Cf"
            assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in path.name), path
        assert not any(c in result.stderr + result.stdout for c in RAW)

    scene.check(no_raw_characters)


def _escapes_in_sender_and_subject(scene: Scene) -> None:
    _nothing_raw(scene)
    scene.attach(
        "5-9-esc.csv",
        b"id\n1\n",
        sender='"\x1b]0;owned\x07\x1b[2J ITRP" <noreply@itrp.com>',
        subject="Export finished \x1b[31mred\x07 \u202egnp.exe",
    )


def _bidi_override_in_name(scene: Scene) -> None:
    _nothing_raw(scene)
    scene.attach("5-9-report\u202ecsv.exe.csv", b"id\n1\n")

    def renamed(result) -> None:
        assert (scene.delivered / "5-9-reportcsv.exe.csv").read_bytes() == b"id\n1\n"

    scene.check(renamed)


def _fullwidth_id(scene: Scene) -> None:
    scene.attach("5-9-wide.csv", b"id\n1\n", export_id="\uff17\uff17\uff17")
    scene.must_not_exist(scene.delivered / "5-9-wide.csv")


def _long_path(scene: Scene) -> None:
    deep = "/".join(["d" * 60] * 75) + "/5-12-deep.csv"
    scene.attach("5-12-export.zip", zip_bytes([(deep, b"id\n1\n")]))


CASES: list[Case] = [
    Case(
        "identity-token-prefix",
        "identity",
        _tokens("t" * 150 + "a", "t" * 150 + "b"),
        0,
        outcome="delivered",
    ),
    Case("identity-token-slash-colon", "identity", _tokens("a/b", "a:b"), 0, outcome="delivered"),
    Case(
        "identity-attachments-sanitised",
        "identity",
        _attachments("5-9-a:b.csv", "5-9-a_b.csv"),
        0,
        message=r"saved as 5-9-a_b~2\.csv",
        outcome="delivered",
    ),
    Case(
        "identity-attachments-nfc-nfd",
        "identity",
        _attachments(
            unicodedata.normalize("NFC", "5-9-café.csv"),
            unicodedata.normalize("NFD", "5-9-café.csv"),
        ),
        0,
        outcome="delivered",
    ),
    Case(
        "identity-attachments-case",
        "identity",
        _attachments("5-9-Big.csv", "5-9-big.csv"),
        0,
        outcome="delivered",
    ),
    Case(
        "identity-attachments-truncated",
        "identity",
        _attachments("5-9-" + "x" * 250 + "1.csv", "5-9-" + "x" * 250 + "2.csv"),
        0,
        outcome="delivered",
    ),
    Case(
        "identity-disposition-bookkeeping-name",
        "identity",
        _disposition_like_metadata,
        0,
        outcome="delivered",
    ),
    Case("link-at-in-progress-name", "fs", _link_at_in_progress, 0, outcome="delivered"),
    Case(
        "link-as-type-sub-folder",
        "fs",
        _link_as_type_folder,
        message=r"symbolic link",
        good_mail=False,
    ),
    Case(
        "link-at-pid-file", "fs", _state_link("pids/export_monitor.777.pid"), 0, outcome="delivered"
    ),
    Case("link-at-lock-file", "fs", _state_link("pids/exportmon.lock"), 0, outcome="delivered"),
    Case(
        "link-at-log-file",
        "fs",
        _state_link("log/export_monitor.777.log"),
        0,
        message=r"symbolic link",
        outcome="delivered",
    ),
    Case(
        "link-at-ledger",
        "fs",
        _state_link("ledger.sqlite", mail=False),
        message=r"ledger\.sqlite is a symbolic link",
        outcome="none",
        good_mail=False,
    ),
    Case(
        "link-at-ledger-wal",
        "fs",
        _state_link("ledger.sqlite-wal", mail=False),
        message=r"ledger\.sqlite-wal is a symbolic link",
        outcome="none",
        good_mail=False,
    ),
    Case("state-ledger-extra-columns", "state", _ledger_with_extra_columns, 0, outcome="none"),
    Case("csv-utf16-without-bom", "csv", _utf16_without_bom, message=r"cannot be read as utf-16"),
    Case("zip-bomb-many-small-entries", "zip", _many_small_bomb, message=r"times its size"),
    Case(
        "text-escapes-in-sender-and-subject",
        "text",
        _escapes_in_sender_and_subject,
        0,
        outcome="delivered",
    ),
    Case("text-bidi-override-in-file-name", "text", _bidi_override_in_name, 0, outcome="delivered"),
    Case(
        "text-fullwidth-export-id",
        "text",
        _fullwidth_id,
        message=r"not a number",
        outcome="failed-mail",
    ),
    Case("text-long-path-error", "text", _long_path, message=r" … "),
]
