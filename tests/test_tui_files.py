"""The console's file browser and its verification key, against the stand-in hub
(tests/tui_standin_files.py): partitions, folders, the filter, marks, an extraction
that really writes files (the stand-in streams real tar streams to ``engine.extract``),
a folder that cannot be written, and a verification seen running, then verified or
damaged. One flow runs against the real hub and node on the lab's fstest1
(``fs_point``). SVG snapshots of the browser and the extract modal at 80x24 and
120x40; update after an intended change with
``pytest tests/test_tui_files.py -k snapshot --snapshot-update``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, Static

from engine.contract.files import FileKind
from engine.contract.status import Verification
from engine.contract.verify import DamagedRange, VerifyReport
from engine.lab.fsimages import KNOWN
from sendense_tui import fmt
from sendense_tui.app import SendenseApp
from sendense_tui.screens.extract_modal import ExtractModal
from sendense_tui.screens.files import FilesScreen
from sendense_tui.screens.restore_point import RestorePointScreen
from sendense_tui.widgets.verification import report_text
from tests.fixtures.points import Point
from tests.test_tui_pilot import console, until
from tests.test_tui_restore import DAMAGED, INCREMENTAL, SIZES, cells, frozen_app, standin, text_of
from tests.test_tui_snapshots import steps
from tests.tui_standin_files import ROOT_FILES, file_system
from tests.tui_standin_hub import FROZEN_AT, MiB

OPS = "/home/ops"


def names(app: SendenseApp) -> list[str]:
    return [n.split(" → ")[0] for n in cells(app, "files-table", "name")]


def marks(app: SendenseApp) -> list[str]:
    return cells(app, "files-table", " ")


async def into_ops(pilot: Pilot[None]) -> None:
    """From the points list: the newest point, browse disk 2000, its ext4, /home/ops."""
    await steps("6", "enter", "b")(pilot)
    await steps("enter")(pilot)  # partition 1, ext4
    await steps("down", "enter", "enter")(pilot)  # /home, then /home/ops


async def test_partitions_folders_filter_marks_and_an_extraction(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, standin())
    out = tmp_path / "restored"
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await steps("6", "enter")(pilot)
        assert "b" in str(app.screen.query_one("#point-ways", Static).render())
        await steps("b")(pilot)
        assert isinstance(app.screen, FilesScreen)
        assert cells(app, "files-table", "#") == ["1", "2", "3"]
        assert cells(app, "files-table", "file system") == ["ext4", "ntfs", "swap (not read)"]
        await steps("G", "enter")(pilot)  # swap: nothing to open, said so
        assert isinstance(app.screen, FilesScreen) and app.screen.partition is None
        assert any("swap" in n.message for n in app._notifications)
        await steps("g", "enter")(pilot)
        assert names(app) == ["etc/", "home/", "lost+found/", "var/"]
        assert "partition 1 ext4 'root'  /" in text_of(app, "files-title")
        await steps("down", "enter", "enter")(pilot)
        assert names(app) == ["archive/", "café.md", "latest", "notes.txt", "report 2026.csv"]
        assert cells(app, "files-table", "name")[2] == "latest → report 2026.csv"
        assert cells(app, "files-table", "mode")[3] == "-rw-------"
        assert cells(app, "files-table", "kind") == ["dir", "file", "link", "file", "file"]
        # / filters this folder; space marks and moves on.
        await steps("slash", "t", "enter")(pilot)
        assert names(app) == ["latest", "notes.txt", "report 2026.csv"]
        assert "3 shown · filter: t" in text_of(app, "files-status")
        await steps("down", "space", "space")(pilot)
        assert marks(app) == ["", "●", "●"]
        known = file_system(ROOT_FILES, FROZEN_AT)
        size = sum(known[f"{OPS}/{n}"].entry.size_bytes for n in ("notes.txt", "report 2026.csv"))
        assert f"2 marked, {fmt.size(size)}" in text_of(app, "files-status")
        await steps("escape")(pilot)  # the filter goes; the marks stay
        assert len(names(app)) == 5 and marks(app) == ["", "", "", "●", "●"]
        await steps("backspace")(pilot)  # up: /home, the cursor on ops
        assert names(app) == ["ops/"] and app.screen.path == "/home"
        # e: the marked files, not the folder under the cursor.
        await steps("e")(pilot)
        modal = app.screen
        assert isinstance(modal, ExtractModal)
        assert [e.name for e in modal.entries] == ["notes.txt", "report 2026.csv"]
        to = modal.query_one("#extract-to", Input)
        assert to.value == f"~/sendense-restore/pgtest1-{INCREMENTAL}"
        to.value = str(out)  # typed keys work too; a long tmp path typed takes seconds
        await pilot.press("enter")
        await until(pilot, lambda: modal.result is not None)
        said = str(modal.query_one("#form-error", Static).render())
        counts = "2 file(s), 0 folder(s), 0 symlink(s)"
        assert f"done: {counts}, {fmt.size(size)} written to {out}" in said
        now = str(modal.query_one("#extract-now", Static).render())
        assert f"{OPS}/report 2026.csv\n2 file(s), {fmt.size(size)} of {fmt.size(size)}" == now
        assert modal.query_one("#extract-bar", ProgressBar).percentage == 1.0
        await steps("enter")(pilot)
        assert isinstance(app.screen, FilesScreen) and not app.screen.marks
        assert "space marks" in text_of(app, "files-status")
    for name in ("notes.txt", "report 2026.csv"):
        written, entry = out / name, known[f"{OPS}/{name}"].entry
        assert written.read_bytes() == ROOT_FILES[entry.path]
        assert entry.mtime is not None
        assert written.stat().st_mtime == pytest.approx(entry.mtime.timestamp())
    assert (out / "notes.txt").stat().st_mode & 0o777 == 0o600


async def test_a_folder_and_a_symlink_under_the_cursor_and_a_target_refused(
    tmp_path: Path,
) -> None:
    app = frozen_app(tmp_path, standin())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = tmp_path / "out"
    async with app.run_test(size=(80, 24)) as pilot:
        await into_ops(pilot)
        assert app.screen.path == OPS
        await steps("e")(pilot)  # nothing marked: the folder under the cursor
        modal = app.screen
        assert isinstance(modal, ExtractModal) and [e.name for e in modal.entries] == ["archive"]
        to = modal.query_one("#extract-to", Input)
        to.value = str(blocker)
        await pilot.press("enter")
        said = str(modal.query_one("#form-error", Static).render())
        assert "not a folder" in said and "\n" not in said
        assert isinstance(app.screen, ExtractModal) and modal.result is None
        assert not to.disabled  # the form is there to change
        to.value = str(out)
        await pilot.press("enter")
        await until(pilot, lambda: modal.result is not None)
        await steps("escape", "down", "down", "e")(pilot)  # latest, a symlink
        modal = app.screen
        assert isinstance(modal, ExtractModal) and [e.name for e in modal.entries] == ["latest"]
        modal.query_one("#extract-to", Input).value = str(out)
        await pilot.press("enter")
        await until(pilot, lambda: modal.result is not None)
        assert modal.result is not None and modal.result.symlinks == 1
    assert (out / "archive" / "2025.tar").read_bytes() == ROOT_FILES[f"{OPS}/archive/2025.tar"]
    assert os.readlink(out / "latest") == "report 2026.csv"
    assert blocker.read_text() == "not a folder"


async def test_a_disk_with_one_file_system_opens_it_at_once(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, standin())
    async with app.run_test(size=(80, 24)) as pilot:
        await steps("6", "enter", "down", "b")(pilot)  # disk 2001: one FAT, no table
        assert isinstance(app.screen, FilesScreen) and app.screen.disk_key == 2001
        assert names(app) == ["EFI/"]
        assert "partition 0 fat32 'BOOT'" in text_of(app, "files-title")
        await steps("backspace")(pilot)  # nothing above: it stays
        assert names(app) == ["EFI/"]
        await steps("enter")(pilot)
        assert names(app) == ["BOOT.CFG"]
        await steps("escape")(pilot)
        assert isinstance(app.screen, RestorePointScreen)


async def test_verify_shows_progress_then_verified_and_the_list_follows(tmp_path: Path) -> None:
    state = standin()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await steps("6", "enter")(pilot)
        line = app.screen.query_one("#point-verify", Static)
        assert not line.display  # never verified: nothing to say beyond the point's state
        await steps("V")(pilot)
        await until(pilot, lambda: "verifying" in text_of(app, "point-verify"))
        assert "0%" in text_of(app, "point-verify")
        state.files.step_verify(INCREMENTAL, 0.5)
        await until(pilot, lambda: " 50%" in text_of(app, "point-verify"))
        assert "120.0 MiB/s" in text_of(app, "point-verify")
        state.files.step_verify(INCREMENTAL, 0.5)
        await until(pilot, lambda: text_of(app, "point-verify").startswith("verified"))
        await until(pilot, lambda: "unverified" not in text_of(app, "point-title"))
        assert "every chunk of 2 disk(s) matches" in text_of(app, "point-verify")
        await steps("escape")(pilot)
        assert cells(app, "points-table", "state")[0] == "verified"


async def test_verify_finds_a_damaged_point_and_names_disk_and_range(tmp_path: Path) -> None:
    state = standin()
    state.files.damage[DAMAGED] = DamagedRange(
        disk_key=2000, offset=48 * MiB, length=MiB, reason="chunk 48 does not match its digest"
    )
    state.restore.points[DAMAGED].verification = Verification.UNVERIFIED
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await steps("6", "down", "enter", "V")(pilot)
        await until(pilot, lambda: "verifying" in text_of(app, "point-verify"))
        state.files.step_verify(DAMAGED, 1.0)
        await until(pilot, lambda: text_of(app, "point-verify").startswith("damaged"))
        await until(pilot, lambda: "damaged" in text_of(app, "point-title"))
        shown = text_of(app, "point-verify")
        assert "disk 2000 at byte 50331648 (48.0 MiB), 1.0 MiB" in shown
        assert "chunk 48 does not match its digest" in shown


async def test_the_labs_fstest1_browsed_and_extracted_through_the_real_hub(
    fs_point: Point, tmp_path: Path
) -> None:
    """The real hub and node on the lab's fstest1 (real ext4 and NTFS on GPT): the
    browser lists what fsimages put there and a folder and a file come out whole."""
    out = tmp_path / "out"
    app = console(fs_point.services, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: cells(app, "points-table", "point id") == [fs_point.point_id])
        await pilot.press("enter")
        await until(pilot, lambda: cells(app, "point-disks", "disk") == ["2000", "2001"])
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.partitions)
        files = app.screen
        assert isinstance(files, FilesScreen)
        assert cells(app, "files-table", "file system") == ["ext4", "ntfs"]
        await pilot.press("enter")
        await until(pilot, lambda: files.entries)
        root = {k.path.split("/")[1] for k in KNOWN["ext4"]}
        assert root <= {e.name for e in files.entries}
        for name in ("docs", "hello.txt"):
            files.table.move_cursor(row=[e.name for e in files.entries].index(name))
            await pilot.press("space")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ExtractModal))
        modal = app.screen
        assert isinstance(modal, ExtractModal)
        modal.query_one("#extract-to", Input).value = str(out)
        await pilot.press("enter")
        await until(pilot, lambda: modal.result is not None)
    for known in KNOWN["ext4"]:
        if not known.path.startswith(("/docs", "/hello.txt")):
            continue
        got = out / known.path.lstrip("/")
        if known.kind is FileKind.SYMLINK:
            assert os.readlink(got) == known.symlink_target
        elif known.kind is FileKind.FILE:
            assert got.read_bytes() == known.data and got.stat().st_mode & 0o7777 == known.mode
        else:
            assert got.is_dir()


def test_a_point_without_digest_tables_is_said_to_be_checked_for_structure_only() -> None:
    report = VerifyReport(
        point_id="p",
        running=False,
        started_at=FROZEN_AT,
        finished_at=FROZEN_AT,
        detail="no digest tables: qemu-img check and every read passed",
    )
    text = report_text(report).plain
    assert text.startswith("structure checked only")
    assert "no digest tables" in text


SCREENS = {
    "files_partitions": steps("6", "enter", "b"),
    "files_folder_marked": steps(
        "6", "enter", "b", "enter", "down", "enter", "enter", "down", "space", "down", "space"
    ),
    "extract_modal": steps("6", "enter", "b", "enter", "down", "enter", "enter", "down", "e"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_files_snapshot(snap_compare, tmp_path: Path, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app(tmp_path), terminal_size=size, run_before=SCREENS[screen])
