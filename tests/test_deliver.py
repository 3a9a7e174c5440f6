"""Local delivery and the unpack/deliver actions on the ledger: exact content, overwrite
policies, order, archive copies, no partial file ever visible, exactly-once after a crash."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from gem_output import GEM_OPTIONS, GEM_ZIP, NAMES, REWRITTEN, UNCHANGED

from exportmon.actions.deliver import deliver_export, deliver_one
from exportmon.actions.unzip import unpack_export
from exportmon.config.schema import CsvConfig, DeliverConfig, MonitorConfig
from exportmon.deliver import IN_PROGRESS, Outgoing, choose_target, delivery_order
from exportmon.deliver.local import LocalDestination
from exportmon.errors import DeliveryError
from exportmon.files.names import timestamped_name
from exportmon.ledger import Ledger

GEM_CSV = CsvConfig(**GEM_OPTIONS)


def check_delivered(folder: Path, expected: dict[str, str], *, sub_dirs: bool) -> None:
    """The four files are in ``folder`` (by type with sub_dirs) with the expected lines."""
    for kind, name in NAMES.items():
        path = folder / kind / name if sub_dirs else folder / name
        assert expected[kind] in path.read_text(encoding="utf-8"), path
    assert not list(folder.rglob(f"*{IN_PROGRESS}"))
    assert len(list(folder.rglob("*.csv"))) == 4


class Setup:
    """A monitor state folder with a ledger, a mail and its downloaded export."""

    def __init__(self, tmp_path: Path, gem_fixtures: Path, download: str = GEM_ZIP) -> None:
        self.root = tmp_path / "state"
        self.out = tmp_path / "out"
        (self.root / "downloads").mkdir(parents=True)
        self.download = self.root / "downloads" / download
        shutil.copyfile(gem_fixtures / download, self.download)
        self.ledger = Ledger.open(self.root / "ledger.sqlite")
        mail = self.ledger.add_mail(source="test", uid="1", message_id="<m1@test>")
        export = self.ledger.add_export(
            key="token-1", kind="link", mail_id=mail.id, export_id=2, file_name=download
        )
        self.mail_id = mail.id
        self.export = self.ledger.advance_export(
            export.id, "downloaded", download_path=str(self.download)
        )

    def monitor(self, **options) -> MonitorConfig:
        deliver = options.pop("deliver", DeliverConfig(to=str(self.out)))
        return MonitorConfig(name="t", ids=[2], root=str(self.root), deliver=deliver, **options)


@pytest.fixture
def setup(tmp_path, gem_fixtures):
    made = Setup(tmp_path, gem_fixtures)
    yield made
    made.ledger.close()


# --- unpack_export ----------------------------------------------------------------------


def test_unpack_export_records_every_file_with_rows_and_checksums(setup):
    export = unpack_export(setup.monitor(), setup.ledger, setup.export)
    assert export.state == "unpacked" and export.files == 4
    assert export.rows == 78 + 17 + 89 + 2  # records, not lines, header excluded
    files = {f.name: f for f in setup.ledger.files(export.id)}
    assert set(files) == set(NAMES.values())
    folder = setup.root / "downloads" / "20130923-072313-export"
    for name, record in files.items():
        assert Path(record.path) == folder / name
        assert record.bytes == (folder / name).stat().st_size
        assert record.export_type == name.rsplit("-", 1)[1][:-4]
        assert record.rewritten == 0
    assert files[NAMES["organizations"]].rows == 17
    # Again: nothing changes, no duplicate records.
    assert unpack_export(setup.monitor(), setup.ledger, export).unpacked_at == export.unpacked_at
    setup.ledger.reset_export(export.id, "downloaded")
    again = unpack_export(setup.monitor(), setup.ledger, setup.ledger.export(export.id))
    assert sorted(f.id for f in setup.ledger.files(again.id)) == sorted(
        f.id for f in files.values()
    )


def test_unpack_export_rewrites_inside_the_staging_folder(setup):
    before = setup.download.read_bytes()
    export = unpack_export(setup.monitor(csv=GEM_CSV, sub_dirs=True), setup.ledger, setup.export)
    folder = setup.root / "downloads" / "20130923-072313-export"
    check_delivered(folder, REWRITTEN, sub_dirs=True)
    assert {f.rewritten for f in setup.ledger.files(export.id)} == {1}
    assert {f.name.split("/")[0] for f in setup.ledger.files(export.id)} == set(NAMES)
    assert setup.download.read_bytes() == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["20130923-072313-export", GEM_ZIP]


def test_unpack_export_of_a_csv_download(tmp_path, gem_fixtures):
    made = Setup(tmp_path, gem_fixtures, download="dummy.csv")
    try:
        plain = unpack_export(made.monitor(), made.ledger, made.export)
        (record,) = made.ledger.files(plain.id)
        assert Path(record.path) == made.download and record.rows == 0
        made.ledger.reset_export(plain.id, "downloaded")
        monitor = made.monitor(csv=CsvConfig(quoting="all"))
        rewritten = unpack_export(monitor, made.ledger, made.ledger.export(plain.id))
        (record,) = made.ledger.files(rewritten.id)
        assert Path(record.path) == made.root / "downloads" / "dummy" / "dummy.csv"
        assert Path(record.path).read_text() == '"exported content"\n'
        assert made.download.read_text() == "exported content"
    finally:
        made.ledger.close()


def test_unpack_export_without_unzip_delivers_the_zip_itself(setup):
    export = unpack_export(setup.monitor(unzip=False), setup.ledger, setup.export)
    (record,) = setup.ledger.files(export.id)
    assert Path(record.path) == setup.download and record.name == GEM_ZIP and record.rows is None


# --- deliver_export ---------------------------------------------------------------------


@pytest.mark.parametrize("sub_dirs", [False, True])
@pytest.mark.parametrize("rewrite", [False, True])
def test_deliver_export_locally_with_the_gems_content(setup, caplog, sub_dirs, rewrite):
    monitor = setup.monitor(sub_dirs=sub_dirs, csv=GEM_CSV if rewrite else None)
    export = unpack_export(monitor, setup.ledger, setup.export)
    with caplog.at_level(logging.INFO, logger="exportmon"):
        export = deliver_export(monitor, setup.ledger, export)
    assert export.state == "delivered"
    assert setup.ledger.mail(setup.mail_id).state == "delivered"
    check_delivered(setup.out, REWRITTEN if rewrite else UNCHANGED, sub_dirs=sub_dirs)
    assert f"Copied 4 file(s) from '{setup.download}' to '{setup.out}'" in caplog.messages
    deliveries = setup.ledger.deliveries(export_row=export.id)
    assert [d.state for d in deliveries] == ["done"] * 4
    assert {d.destination for d in deliveries} == {f"local:{setup.out}"}
    for delivery in deliveries:
        record = setup.ledger.file(delivery.file_id)
        assert delivery.bytes == record.bytes and delivery.sha256 == record.sha256
        assert delivery.finished_at >= delivery.started_at


def test_a_delivered_file_is_not_delivered_again(setup):
    monitor = setup.monitor()
    export = deliver_export(
        monitor, setup.ledger, unpack_export(monitor, setup.ledger, setup.export)
    )
    setup.ledger.reset_export(export.id, "unpacked")
    target = setup.out / NAMES["sites"]
    target.write_text("changed by the consumer")
    deliver_export(monitor, setup.ledger, setup.ledger.export(export.id))
    assert target.read_text() == "changed by the consumer"
    assert len(setup.ledger.deliveries(export_row=export.id)) == 4


def test_order_delivers_the_listed_types_first_then_alphabetically(setup):
    monitor = setup.monitor(deliver=DeliverConfig(to=str(setup.out), order=["sites", "calendars"]))
    export = deliver_export(
        monitor, setup.ledger, unpack_export(monitor, setup.ledger, setup.export)
    )
    started = [d.target for d in setup.ledger.deliveries(export_row=export.id)]
    assert started == [
        NAMES["sites"],
        NAMES["calendars"],
        NAMES["organizations"],
        NAMES["organizations_contact_details"],
    ]
    assert delivery_order(["b/5-1-x.csv", "a/5-1-y.csv", "5-1-organizations.csv"], ["x"]) == [
        "b/5-1-x.csv",
        "5-1-organizations.csv",
        "a/5-1-y.csv",
    ]
    # A folder source's [[types]] know the type when the name does not tell it.
    typed = [
        Outgoing(Path("a"), "users.txt", 1, type="person"),
        Outgoing(Path("b"), "courses.txt", 1, type="course"),
        Outgoing(Path("c"), "5-1-organizations.csv", 1),
    ]
    ordered = delivery_order(
        typed, ["course", "person"], name=lambda o: o.name, type=lambda o: o.type
    )
    assert [o.name for o in ordered] == ["courses.txt", "users.txt", "5-1-organizations.csv"]


def test_archive_dir_keeps_a_time_stamped_copy_of_every_file(setup):
    archive = setup.out.parent / "archive"
    deliver = DeliverConfig(to=str(setup.out), archive_dir=str(archive))
    monitor = setup.monitor(deliver=deliver)
    export = deliver_export(
        monitor, setup.ledger, unpack_export(monitor, setup.ledger, setup.export)
    )
    copies = sorted(p.name for p in archive.iterdir())
    assert len(copies) == 4
    for copy, name in zip(copies, sorted(NAMES.values()), strict=True):
        stem = name[: -len(".csv")]
        assert copy.startswith(stem + ".") and copy.endswith("Z.csv"), copy
    labels = {d.destination for d in setup.ledger.deliveries(export_row=export.id)}
    assert labels == {f"local:{setup.out}", f"archive:{archive}"}


def test_without_a_destination_the_export_stays_unpacked(setup, caplog):
    monitor = setup.monitor(deliver=DeliverConfig(archive_dir=str(setup.out)))
    export = unpack_export(monitor, setup.ledger, setup.export)
    with caplog.at_level(logging.WARNING, logger="exportmon"):
        assert deliver_export(monitor, setup.ledger, export).state == "unpacked"
    assert "no destination configured" in caplog.text
    assert not setup.out.exists()
    assert setup.ledger.mail(setup.mail_id).state == "new"


@pytest.mark.parametrize("order", [[], ["sites"]])
def test_a_failed_destination_is_recorded_and_a_retry_completes(setup, order):
    blocker = setup.out
    blocker.write_text("a file where the folder should be")
    monitor = setup.monitor(deliver=DeliverConfig(to=str(setup.out), order=order))
    export = unpack_export(monitor, setup.ledger, setup.export)
    with pytest.raises(DeliveryError, match="cannot copy"):
        deliver_export(monitor, setup.ledger, export)
    failed = setup.ledger.deliveries(export_row=export.id)
    # Every file is tried, unless an order is set: then the first failure stops the rest.
    assert [d.state for d in failed] == ["failed"] * (1 if order else 4)
    assert setup.ledger.export(export.id).state == "unpacked"
    blocker.unlink()
    assert deliver_export(monitor, setup.ledger, export).state == "delivered"
    assert len(setup.ledger.deliveries(export_row=export.id, state="done")) == 4


def test_an_interrupted_delivery_is_completed_or_redone_without_duplicates(setup):
    monitor = setup.monitor(deliver=DeliverConfig(to=str(setup.out), overwrite="timestamp"))
    export = unpack_export(monitor, setup.ledger, setup.export)
    files = {f.name: f for f in setup.ledger.files(export.id)}
    label = f"local:{setup.out}"
    setup.out.mkdir()
    # A crash after the rename of one file, and one in the middle of copying another.
    complete = files[NAMES["calendars"]]
    complete_target = timestamped_name(complete.name, datetime(2026, 1, 2, tzinfo=timezone.utc))
    shutil.copyfile(complete.path, setup.out / complete_target)
    first = setup.ledger.start_delivery(
        destination=label,
        source_path=complete.path,
        target=complete_target,
        file_id=complete.id,
        export_row=export.id,
    )
    cut = files[NAMES["sites"]]
    cut_target = timestamped_name(cut.name, datetime(2026, 1, 2, tzinfo=timezone.utc))
    (setup.out / (cut_target + IN_PROGRESS)).write_text("half")
    second = setup.ledger.start_delivery(
        destination=label,
        source_path=cut.path,
        target=cut_target,
        file_id=cut.id,
        export_row=export.id,
    )
    assert len(setup.ledger.interrupted_deliveries(label)) == 2

    deliver_export(monitor, setup.ledger, export)

    assert setup.ledger.interrupted_deliveries(label) == []
    assert setup.ledger.delivery(first.id).state == "done"
    assert setup.ledger.delivery(second.id).state == "done"
    assert len(setup.ledger.deliveries(export_row=export.id)) == 4
    delivered = sorted(p.name for p in setup.out.iterdir())
    assert len(delivered) == 4, delivered
    assert complete_target in delivered and cut_target in delivered
    assert (setup.out / cut_target).read_bytes() == Path(cut.path).read_bytes()


# --- local destination ------------------------------------------------------------------


def test_overwrite_policies(tmp_path):
    source = tmp_path / "5-1-sites.csv"
    source.write_text("new")
    item = Outgoing.from_path(source, "sites/5-1-sites.csv")
    folder = tmp_path / "out"
    (folder / "sites").mkdir(parents=True)
    (folder / "sites" / "5-1-sites.csv").write_text("old")
    moment = datetime(2026, 11, 23, 8, 40, tzinfo=timezone.utc)

    keep = LocalDestination(folder, overwrite="keep")
    assert deliver_one(keep, item).placed.kept
    assert (folder / "sites" / "5-1-sites.csv").read_text() == "old"

    stamped = LocalDestination(folder, overwrite="timestamp")
    first = deliver_one(stamped, item, moment=moment).placed
    second = deliver_one(stamped, item, moment=moment).placed
    assert first.target == "sites/5-1-sites.20261123T084000Z.csv"
    assert second.target == "sites/5-1-sites.20261123T084000Z-2.csv"
    assert (folder / "sites" / "5-1-sites.csv").read_text() == "old"

    replace = LocalDestination(folder, overwrite="replace")
    assert deliver_one(replace, item).placed.location == str(folder / "sites" / "5-1-sites.csv")
    assert (folder / "sites" / "5-1-sites.csv").read_text() == "new"
    assert choose_target(replace, "x.csv") == ("x.csv", False)
    with pytest.raises(DeliveryError):
        LocalDestination(folder, overwrite="sometimes")
    with pytest.raises(DeliveryError, match="outside"):
        replace.path("../escape.csv")


def test_a_concurrent_reader_never_sees_a_partial_file_under_its_final_name(tmp_path):
    source = tmp_path / "big.csv"
    source.write_bytes(b"0123456789" * 2_000_000)
    size = source.stat().st_size
    folder = tmp_path / "out"
    final = folder / "big.csv"
    seen = {"in_progress": 0, "final_partial": 0, "final": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if (folder / ("big.csv" + IN_PROGRESS)).exists():
                seen["in_progress"] += 1
            try:
                found = final.stat().st_size
            except FileNotFoundError:
                continue
            seen["final" if found == size else "final_partial"] += 1

    def slow(text, total):  # a progress callback that makes the copy take a while
        return (lambda n: time.sleep(0.02)), (lambda: None)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        placed = LocalDestination(folder).put(
            Outgoing.from_path(source, "big.csv"), "big.csv", progress=slow
        )
    finally:
        time.sleep(0.05)
        done.set()
        watcher.join()
    assert placed.bytes == size and final.read_bytes() == source.read_bytes()
    assert seen["in_progress"] > 0, "the watcher must have seen the copy in progress"
    assert seen["final_partial"] == 0
    assert seen["final"] > 0


def test_a_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(DeliveryError, match="cannot deliver"):
        Outgoing.from_path(tmp_path / "gone.csv", "gone.csv")


def test_names_of_zip_entries(tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("a\\5-1-sites.csv", "1\n")
    from exportmon.files.unzip import unzip

    assert [f.name for f in unzip(archive, sub_dirs=True)] == ["sites/a/5-1-sites.csv"]
