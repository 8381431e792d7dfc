"""A restore point's verification on one line: its progress while the hub runs it, then
how it ended (verified; damaged, with the disk and byte range; or checked for structure
only, for a point without digest tables).

The hub sends no events for a verification, so this line asks while one runs
(``POLL_SECONDS``) and not at all otherwise; ``Finished`` tells its screen to read
the point again, whose state the verification changed.
"""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static

from engine.contract.status import Verification
from engine.contract.verify import DamagedRange, VerifyReport
from engine.errors import SendenseError
from engine.hub_client import HubClient
from sendense_tui import fmt
from sendense_tui.calls import call_hub

POLL_SECONDS = 0.5
RANGES_SHOWN = 3


def damaged_text(damage: DamagedRange) -> str:
    where = f"disk {damage.disk_key}"
    if damage.offset is not None:
        where += f" at byte {damage.offset}"
        if damage.offset >= 1024:
            where += f" ({fmt.size(damage.offset)})"
        if damage.length:
            where += f", {fmt.size(damage.length)}"
    return f"{where}: {damage.reason}"


def report_text(report: VerifyReport) -> Text:
    text = Text()
    if report.running:
        text.append("verifying ", style="bold cyan")
        text.append_text(fmt.bar(report.bytes_done, report.bytes_total))
        text.append(
            f" {fmt.size(report.bytes_done)} of {fmt.size(report.bytes_total)}"
            f" · {fmt.rate(report.rate_bps)}"
        )
    elif report.error:
        text.append("verification failed: ", style="bold red")
        text.append(report.error)
    elif report.state is Verification.VERIFIED:
        text.append("verified", style="bold green")
        text.append(f" {fmt.moment(report.finished_at)}")
        if report.detail:
            text.append(f" · {report.detail}", style="dim")
    elif report.state is Verification.DAMAGED:
        text.append("damaged", style="bold red")
        text.append(f" {fmt.moment(report.finished_at)}")
        for damage in report.damaged[:RANGES_SHOWN]:
            text.append(f"\n  {damaged_text(damage)}", style="red")
        if len(report.damaged) > RANGES_SHOWN:
            text.append(f"\n  and {len(report.damaged) - RANGES_SHOWN} more range(s)")
        if not report.damaged and report.detail:
            text.append(f": {report.detail}", style="red")
    else:  # finished, unverified: no digest tables to compare with
        text.append("structure checked only", style="bold yellow")
        text.append(f" {fmt.moment(report.finished_at)}")
        text.append(f" · {report.detail or 'the point has no digest tables'}")
    return text


class VerificationLine(Static):
    class Finished(Message):
        """A verification this line watched has ended."""

        def __init__(self, report: VerifyReport) -> None:
            super().__init__()
            self.report = report

    def __init__(self, client: HubClient, point_id: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.client = client
        self.point_id = point_id
        self.report: VerifyReport | None = None
        self._timer: Timer | None = None

    def on_mount(self) -> None:
        self.display = False
        self.run_worker(self._last(), group="verify")

    async def _last(self) -> None:
        """A verification already running (from the CLI) or the last one, if any; not
        having one is nothing to report."""
        try:
            report = await self.client.verification(self.point_id)
        except SendenseError:
            return
        self.show(report)

    def start(self) -> None:
        call_hub(self, self.client.verify(self.point_id), self.show, name="verify")

    def _poll(self) -> None:
        call_hub(self, self.client.verification(self.point_id), self.show, name="verify")

    def show(self, report: VerifyReport) -> None:
        was_running = self.report is not None and self.report.running
        self.report = report
        if not report.running and report.started_at is None:
            return  # never verified: the point's state says so already
        self.display = True
        self.update(report_text(report))
        if report.running and self._timer is None:
            self._timer = self.set_interval(POLL_SECONDS, self._poll)
        elif not report.running:
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            if was_running:
                self.post_message(self.Finished(report))
