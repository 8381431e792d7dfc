"""Files and folders of a restore point written to a folder on this machine.

The hub streams each entry as a tar stream and ``engine.extract`` writes it here (the
console may run far from the hub, and the operator wants the files where they sit).
A folder that cannot be written is said in the modal before anything is asked of the
hub; leaving while it runs stops it, and the extraction leaves no partial file.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, ProgressBar, Static

from engine.contract.files import FileEntry, FileKind, Partition
from engine.contract.restore import RestorePoint
from engine.errors import SendenseError
from engine.extract import ExtractProgress, ExtractResult, check_target, extract
from sendense_tui import fmt
from sendense_tui.screens.form import heading, row
from sendense_tui.screens.restore_modals import RequestModal
from sendense_tui.state import ConsoleState

RESTORE_FOLDER = "~/sendense-restore"
NAMES_SHOWN = 4
READY = "enter extracts · esc goes back"


def default_target(point: RestorePoint) -> str:
    return f"{RESTORE_FOLDER}/{point.vm_name}-{point.point_id}"


def what_text(entries: list[FileEntry]) -> str:
    """The entries by name, a few of them, and how many more."""
    names = [e.name + ("/" if e.kind is FileKind.DIRECTORY else "") for e in entries]
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def result_text(result: ExtractResult, to: Path) -> Text:
    text = Text()
    text.append("done: ", style="bold green")
    text.append(
        f"{result.files} file(s), {result.folders} folder(s), {result.symlinks} symlink(s), "
        f"{fmt.size(result.bytes)} written to {to}"
    )
    if result.skipped:
        text.append(f"\nskipped {len(result.skipped)}: ", style="yellow")
        text.append("; ".join(result.skipped[:NAMES_SHOWN]))
    return text


class ExtractModal(RequestModal[ExtractResult]):
    """Dismissed with the extraction's result once it is over (or None when left)."""

    ACTION = "extracts"

    def __init__(
        self,
        state: ConsoleState,
        point: RestorePoint,
        disk_key: int,
        partition: Partition,
        entries: list[FileEntry],
    ) -> None:
        super().__init__(state, point)
        self.disk_key_chosen = disk_key
        self.partition = partition
        self.entries = entries
        self.to: Path | None = None
        self.result: ExtractResult | None = None

    def form(self) -> ComposeResult:
        point, part = self.point, self.partition
        yield from heading(
            f"Extract {len(self.entries)} entr{'y' if len(self.entries) == 1 else 'ies'} "
            f"of {point.vm_name}",
            f"point {point.point_id}, disk {self.disk_key_chosen}, partition {part.number} "
            f"({part.filesystem}); written on this machine",
        )
        yield Static(what_text(self.entries), id="extract-what")
        yield row("to", Input(default_target(point), id="extract-to", compact=True), gap=True)
        with Vertical(id="extract-progress"):
            yield ProgressBar(id="extract-bar", show_eta=False)
            yield Static(id="extract-now")

    def on_mount(self) -> None:
        self.query_one("#extract-progress").display = False
        self._hint(READY)
        self.query_one("#extract-to", Input).focus()

    def request(self) -> Awaitable[ExtractResult]:
        to = Path(self.value("extract-to") or default_target(self.point)).expanduser()
        check_target(to)  # BadInput: said in the modal, nothing asked of the hub
        self.to = to
        self.query_one("#extract-progress").display = True
        self.query_one("#extract-to", Input).disabled = True
        self._hint("esc stops it; nothing half-written is left")
        return self._extract(to)

    async def _extract(self, to: Path) -> ExtractResult:
        try:
            return await extract(
                self.state.client,
                self.point.point_id,
                self.disk_key_chosen,
                [e.path for e in self.entries],
                to,
                partition=self.partition.number,
                progress=self._progress,
            )
        except SendenseError:
            self._stopped()
            raise
        except OSError as exc:
            self._stopped()
            raise SendenseError(f"cannot write under {to}: {exc.strerror or exc}") from None

    def _stopped(self) -> None:
        """Failed: the form is the operator's again, to change and try once more."""
        self.query_one("#extract-to", Input).disabled = False
        self._hint(READY)

    def _hint(self, words: str) -> None:
        self.query_one("#form-hint", Static).update(Text(words, style="dim"))

    def _progress(self, progress: ExtractProgress) -> None:
        bar = self.query_one("#extract-bar", ProgressBar)
        bar.update(total=progress.bytes_total, progress=progress.bytes_done)
        total = f" of {fmt.size(progress.bytes_total)}" if progress.bytes_total else ""
        now = Text(progress.path, style="bold")
        now.append(f"\n{progress.files} file(s), {fmt.size(progress.bytes_done)}{total}")
        self.query_one("#extract-now", Static).update(now)

    def done(self, answer: ExtractResult) -> None:
        self.result = answer
        bar = self.query_one("#extract-bar", ProgressBar)
        bar.update(total=max(answer.bytes, 1), progress=max(answer.bytes, 1))
        assert self.to is not None
        self.query_one("#form-error", Static).update(result_text(answer, self.to))
        self._hint("enter or esc closes")

    def action_confirm(self) -> None:
        if self.result is not None:
            self.dismiss(self.result)
        else:
            super().action_confirm()

    def action_dismiss_modal(self) -> None:
        self.dismiss(self.result)
