"""Policies in the words the console shows: times in the policy's own timezone (its
schedule is read there, so "22:00" means what the cron says), retention as one short
line, a run as its state and how many of its VMs were backed up ("failed 2/3").

The hub sends naive UTC times; a time with a zone is taken as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.text import Text

from engine.contract.policy import Policy, PolicyRun, PolicyRunVM, Retention
from engine.contract.status import JobStatus, PolicyRunStatus

RUN_STYLE = {
    PolicyRunStatus.RUNNING: "cyan",
    PolicyRunStatus.COMPLETED: "green",
    PolicyRunStatus.FAILED: "bold red",
    PolicyRunStatus.MISSED: "yellow",
    PolicyRunStatus.CANCELLED: "yellow",
}
VM_STYLE = {
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
}
GFS = (("keep_daily", "d"), ("keep_weekly", "w"), ("keep_monthly", "m"), ("keep_yearly", "y"))


def zone_of(name: str) -> ZoneInfo:
    """The policy's zone; one this machine does not know is shown as UTC."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def when(at: datetime | None, zone: str) -> str:
    """Month, day and time of day in the policy's zone; empty for no time."""
    if at is None:
        return ""
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(zone_of(zone)).strftime("%m-%d %H:%M")


def retention_words(retention: Retention) -> str:
    """``last 7 · 14d 8w 12m 2y``; ``keeps all`` when no rule is set."""
    if retention.keeps_everything:
        return "keeps all"
    parts = [f"last {retention.keep_last}"] if retention.keep_last else []
    gfs = " ".join(
        f"{getattr(retention, field)}{unit}" for field, unit in GFS if getattr(retention, field)
    )
    return " · ".join([*parts, gfs] if gfs else parts)


def backed_up(run: PolicyRun) -> tuple[int, int]:
    """How many of the run's VMs completed, of how many it covered."""
    done = sum(1 for vm in run.vms if vm.status is JobStatus.COMPLETED)
    return done, len(run.vms)


def run_state(run: PolicyRun) -> Text:
    """``failed 2/3``: the run's state and its VMs backed up of all (none for a run that
    had no VM, missed or could not start)."""
    text = Text(run.status.value, style=RUN_STYLE[run.status])
    done, total = backed_up(run)
    if total:
        text.append(f" {done}/{total}")
    return text


def last_run(policy: Policy) -> Text:
    """The list's "last run" cell: its state, then when it was for (or began)."""
    run = policy.last_run
    if run is None:
        return Text("never", style="dim")
    text = run_state(run)
    text.append(f" {when(run.scheduled_for or run.started_at, policy.timezone)}")
    return text


def enabled_text(enabled: bool) -> Text:
    return Text("on", style="green") if enabled else Text("off", style="yellow")


def vm_state(vm: PolicyRunVM) -> Text:
    """A run's VM: its job's state ("queued #2" in the queue), or why it has none."""
    if vm.status is None:
        return Text("not queued", style="bold red")
    if vm.status is JobStatus.QUEUED and vm.queue_position:
        return Text(f"queued #{vm.queue_position}", style="cyan")
    return Text(vm.status.value, style=VM_STYLE.get(vm.status, "cyan"))
