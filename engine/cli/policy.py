"""``sendense policy``: scheduled backups with retention, through the hub API.

A policy names its VMs by inventory path (a VM, or a folder, cluster, host or resource
pool whose VMs are taken at each run), a repository, a cron schedule in a timezone, the
backup type, what to keep, and whom to tell. The hub checks all of it when it is stored
(one line for what is wrong: exit 2, a repository that is not there: 7, a name taken: 8).

Notification URLs (Apprise) often hold a token or a password, and a command line is
visible to every user in ``ps``: ``--notify -`` reads them from standard input instead,
one per line. The hub seals them; no answer and no output shows them unredacted.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import typer
from pydantic import SecretStr, TypeAdapter
from rich.table import Table

from engine.cli.common import console, err_console, on_hub, read_secret_stdin
from engine.cli.restore_points import size_text
from engine.contract.policy import (
    Policy,
    PolicyEdit,
    PolicyIn,
    PolicyPreview,
    PolicyRun,
    Retention,
)
from engine.contract.status import BackupType, JobStatus, PolicyRunStatus
from engine.errors import BadInput
from engine.hub_client import HubClient

policy_app = typer.Typer(
    help="Policies: scheduled backups of VMs and folders, with retention.", no_args_is_help=True
)

_POLICIES = TypeAdapter(list[Policy])
_RUNS = TypeAdapter(list[PolicyRun])
WAIT_POLL_SECONDS = 1.0

NAME_HELP = "The policy's name."
JSON_HELP = "JSON for scripts."
INCLUDE_HELP = (
    "An inventory path: a VM, or a datacenter, folder, cluster, host or resource pool "
    "whose VMs are taken at each run (repeat for more)."
)
EXCLUDE_HELP = "An inventory path whose VMs are left out, by the same rules (repeatable)."
NOTIFY_HELP = (
    "An Apprise URL told of each failed run (mailto://, json://, slack://…; repeatable). "
    "'-' reads them from standard input, one per line: a URL on the command line is "
    "visible in ps."
)
KEEP_HELP = {
    "last": "Keep the newest N points of each VM.",
    "daily": "Keep the newest point of each of the last N days that have one.",
    "weekly": "Keep the newest point of each of the last N weeks.",
    "monthly": "Keep the newest point of each of the last N months.",
    "yearly": "Keep the newest point of each of the last N years.",
}


# ---- options shared by add and edit -------------------------------------------------------


def _retention(**keep: int | None) -> Retention:
    return Retention(**{f"keep_{k}": v for k, v in keep.items()})


def notify_urls(given: list[str]) -> list[SecretStr]:
    """The URLs given, with ``-`` standing for those on standard input (one per line; a
    terminal is asked for one, unechoed)."""
    urls: list[str] = []
    for value in given:
        if value != "-":
            urls.append(value)
        elif sys.stdin.isatty():
            urls.append(read_secret_stdin("notification URL"))
        else:
            read = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
            if not read:
                raise BadInput("--notify -: no URL on standard input")
            urls.extend(read)
    return [SecretStr(u) for u in urls]


# ---- output ---------------------------------------------------------------------------


def _when(at: datetime | None, zone: str | None = None) -> str:
    """A naive UTC time on the policy's wall clock, with UTC beside it."""
    if at is None:
        return "-"
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    if zone and zone != "UTC":
        local = utc.astimezone(ZoneInfo(zone))
        return f"{local:%Y-%m-%d %H:%M} {zone} ({utc:%H:%M} UTC)"
    return f"{utc:%Y-%m-%d %H:%M} UTC"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def retention_text(keep: Retention) -> str:
    rules = [
        f"{name.removeprefix('keep_')} {value}"
        for name, value in keep.model_dump().items()
        if value is not None
    ]
    return ", ".join(rules) if rules else "everything"


def run_line(run: PolicyRun, zone: str | None = None) -> str:
    when = run.scheduled_for or run.started_at
    error = f": {run.error}" if run.error else ""
    return f"run {run.id} ({run.trigger}, {_when(when, zone)}) {run.status}{error}"


def print_run(run: PolicyRun, zone: str | None = None) -> None:
    console.print(f"[bold]{run_line(run, zone)}[/]", highlight=False, soft_wrap=True)
    table = Table("vm", "path", "status", "backup", "queue", "type", "bytes", "took", "error")
    for vm in run.vms:
        table.add_row(
            vm.vm_name,
            vm.vm_path,
            vm.status or "not queued",
            vm.backup_id or "",
            str(vm.queue_position or ""),
            vm.backup_type or "",
            size_text(vm.bytes_transferred),
            _duration(vm.duration_seconds),
            vm.error or "",
        )
    console.print(table)
    for line in run.retention:
        console.print(f"retention: {line}", highlight=False, soft_wrap=True)
    if run.notify_error:
        console.print(f"notification: {run.notify_error}", highlight=False, soft_wrap=True)


def print_policy(p: Policy) -> None:
    state = "enabled" if p.enabled else "disabled"
    console.print(
        f"[bold]{p.name}[/]  {state}  repository {p.repository_id}  type {p.backup_type}",
        highlight=False,
    )
    told = "on failure and success" if p.notify_on_success else "on failure"
    lines = [
        ("schedule", f"{p.schedule} ({p.timezone})"),
        ("include", ", ".join(p.include)),
        ("exclude", ", ".join(p.exclude)),
        ("keep", retention_text(p.retention)),
        ("notify", f"{', '.join(p.notify)} ({told})" if p.notify else ""),
        ("next run", _when(p.next_run_at, p.timezone) if p.enabled else "- (disabled)"),
    ]
    for label, value in lines:
        if value:
            console.print(f"{label + ':':<10}{value}", highlight=False, soft_wrap=True)
    if p.last_run is not None:
        print_run(p.last_run, p.timezone)


def _emit(policy: Policy, as_json: bool) -> None:
    if as_json:
        print(policy.model_dump_json(indent=2))
    else:
        print_policy(policy)


# ---- commands ---------------------------------------------------------------------------


@policy_app.command("add")
def policy_add(
    name: str = typer.Argument(..., help="A unique name (no '/')."),
    repo: int = typer.Option(..., "--repo", help="Repository id (sendense repo list)."),
    schedule: str = typer.Option(
        ..., "--schedule", help="A cron expression, e.g. '0 2 * * *' (02:00 each day)."
    ),
    timezone: str = typer.Option("UTC", "--timezone", help="The schedule's IANA timezone."),
    include: list[str] = typer.Option(..., "--include", help=INCLUDE_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help=EXCLUDE_HELP),
    backup_type: BackupType = typer.Option(
        BackupType.AUTO, "--type", help="auto (incremental when possible), full or incremental."
    ),
    keep_last: int | None = typer.Option(None, "--keep-last", help=KEEP_HELP["last"]),
    keep_daily: int | None = typer.Option(None, "--keep-daily", help=KEEP_HELP["daily"]),
    keep_weekly: int | None = typer.Option(None, "--keep-weekly", help=KEEP_HELP["weekly"]),
    keep_monthly: int | None = typer.Option(None, "--keep-monthly", help=KEEP_HELP["monthly"]),
    keep_yearly: int | None = typer.Option(None, "--keep-yearly", help=KEEP_HELP["yearly"]),
    notify: list[str] = typer.Option([], "--notify", help=NOTIFY_HELP),
    notify_on_success: bool = typer.Option(
        False, "--notify-on-success", help="Tell the --notify targets of good runs too."
    ),
    disabled: bool = typer.Option(False, "--disabled", help="Store it, but do not schedule it."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add a policy. Nothing is stored unless all of it is usable: the schedule and
    timezone parse, the repository exists, every path is in a vCenter's inventory and
    the includes select at least one VM. With no --keep-* every point is kept."""
    request = PolicyIn(
        name=name,
        repository_id=repo,
        schedule=schedule,
        timezone=timezone,
        include=include,
        exclude=exclude,
        backup_type=backup_type,
        retention=_retention(
            last=keep_last,
            daily=keep_daily,
            weekly=keep_weekly,
            monthly=keep_monthly,
            yearly=keep_yearly,
        ),
        notify=notify_urls(notify),
        notify_on_success=notify_on_success,
        enabled=not disabled,
    )
    _emit(on_hub(lambda hub: hub.add_policy(request)), as_json)


@policy_app.command("edit")
def policy_edit(
    name: str = typer.Argument(..., help=NAME_HELP),
    new_name: str | None = typer.Option(None, "--name", help="A new name."),
    repo: int | None = typer.Option(None, "--repo", help="Repository id."),
    schedule: str | None = typer.Option(None, "--schedule", help="A cron expression."),
    timezone: str | None = typer.Option(None, "--timezone", help="An IANA timezone."),
    include: list[str] = typer.Option([], "--include", help=INCLUDE_HELP + " Replaces the list."),
    exclude: list[str] = typer.Option([], "--exclude", help=EXCLUDE_HELP + " Replaces the list."),
    no_exclude: bool = typer.Option(False, "--no-exclude", help="Exclude nothing any more."),
    backup_type: BackupType | None = typer.Option(
        None, "--type", help="auto, full or incremental."
    ),
    keep_last: int | None = typer.Option(None, "--keep-last", help=KEEP_HELP["last"]),
    keep_daily: int | None = typer.Option(None, "--keep-daily", help=KEEP_HELP["daily"]),
    keep_weekly: int | None = typer.Option(None, "--keep-weekly", help=KEEP_HELP["weekly"]),
    keep_monthly: int | None = typer.Option(None, "--keep-monthly", help=KEEP_HELP["monthly"]),
    keep_yearly: int | None = typer.Option(None, "--keep-yearly", help=KEEP_HELP["yearly"]),
    keep_all: bool = typer.Option(False, "--keep-all", help="Drop every --keep-* rule."),
    notify: list[str] = typer.Option([], "--notify", help=NOTIFY_HELP + " Replaces the list."),
    no_notify: bool = typer.Option(False, "--no-notify", help="Tell no one any more."),
    notify_on_success: bool | None = typer.Option(
        None, "--notify-on-success/--notify-on-failure-only", help="Tell of good runs too?"
    ),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="Schedule it?"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Change a policy: only the options given change (a --keep-* changes that rule and
    keeps the others). A run going on keeps its VMs; the next run takes the edit."""
    if (exclude and no_exclude) or (notify and no_notify):
        raise BadInput("give a list or clear it (--no-exclude, --no-notify), not both")
    keep = {
        "last": keep_last,
        "daily": keep_daily,
        "weekly": keep_weekly,
        "monthly": keep_monthly,
        "yearly": keep_yearly,
    }
    if keep_all and any(v is not None for v in keep.values()):
        raise BadInput("give --keep-all or --keep-* rules, not both")
    given: dict[str, object] = {
        "name": new_name,
        "repository_id": repo,
        "schedule": schedule,
        "timezone": timezone,
        "include": include or None,
        "exclude": [] if no_exclude else (exclude or None),
        "backup_type": backup_type,
        "retention": Retention() if keep_all else None,
        "notify": [] if no_notify else (notify_urls(notify) if notify else None),
        "notify_on_success": notify_on_success,
        "enabled": enabled,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    rules = {k: v for k, v in keep.items() if v is not None}
    if not fields and not rules:
        raise BadInput("nothing to change: give at least one option (see --help)")

    async def edit(hub: HubClient) -> Policy:
        if rules:  # the policy's other rules stay
            current = (await hub.policy(name)).retention.model_dump()
            fields["retention"] = Retention(
                **{**current, **{f"keep_{k}": v for k, v in rules.items()}}
            )
        return await hub.edit_policy(name, PolicyEdit.model_validate(fields))

    _emit(on_hub(edit), as_json)


@policy_app.command("list")
def policy_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Every policy with its schedule, next run and last run."""
    found = on_hub(lambda hub: hub.policies())
    if as_json:
        print(_POLICIES.dump_json(found, indent=2).decode())
        return
    table = Table("name", "state", "schedule", "repo", "keep", "next run", "last run")
    for p in found:
        last = p.last_run
        table.add_row(
            p.name,
            "enabled" if p.enabled else "disabled",
            f"{p.schedule} ({p.timezone})",
            str(p.repository_id),
            retention_text(p.retention),
            _when(p.next_run_at, p.timezone) if p.enabled else "-",
            f"{last.status} ({_when(last.scheduled_for or last.started_at)})" if last else "-",
        )
    console.print(table)


@policy_app.command("show")
def policy_show(
    name: str = typer.Argument(..., help=NAME_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """One policy, with its last run's VMs."""
    _emit(on_hub(lambda hub: hub.policy(name)), as_json)


@policy_app.command("enable")
def policy_enable(
    name: str = typer.Argument(..., help=NAME_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Schedule it again from now on (times that passed while disabled are not caught up)."""
    _emit(on_hub(lambda hub: hub.set_policy_enabled(name, True)), as_json)


@policy_app.command("disable")
def policy_disable(
    name: str = typer.Argument(..., help=NAME_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Stop scheduling it (a run going on goes on)."""
    _emit(on_hub(lambda hub: hub.set_policy_enabled(name, False)), as_json)


@policy_app.command("delete")
def policy_delete(
    name: str = typer.Argument(..., help=NAME_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Delete the policy and its runs' records (its restore points and jobs stay)."""
    on_hub(lambda hub: hub.delete_policy(name))
    if as_json:
        print('{"deleted": true}')
    else:
        console.print(f"deleted policy {name}", highlight=False)


@policy_app.command("vms")
def policy_vms(
    name: str = typer.Argument(..., help=NAME_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The VMs the policy covers if it ran now (resolved from vCenter), and those its
    excludes leave out, each with the path that decided it."""
    preview: PolicyPreview = on_hub(lambda hub: hub.policy_vms(name))
    if as_json:
        print(preview.model_dump_json(indent=2))
        return
    table = Table("vm", "path", "vcenter", "taken by", "context")
    for vm in preview.vms:
        table.add_row(vm.vm_name, vm.vm_path, vm.vcenter_host, vm.matched_by, vm.context_id or "")
    for vm in preview.excluded:
        table.add_row(vm.vm_name, vm.vm_path, vm.vcenter_host, f"excluded by {vm.matched_by}", "")
    console.print(table)
    console.print(
        f"{len(preview.vms)} VM(s) backed up, {len(preview.excluded)} excluded", highlight=False
    )


@policy_app.command("runs")
def policy_runs(
    name: str = typer.Argument(..., help=NAME_HELP),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The policy's runs, newest first."""
    found = on_hub(lambda hub: hub.policy_runs(name, limit))
    if as_json:
        print(_RUNS.dump_json(found, indent=2).decode())
        return
    for run in found:
        done = sum(vm.status == JobStatus.COMPLETED for vm in run.vms)
        console.print(f"{run_line(run)}  {done}/{len(run.vms)} VMs completed", highlight=False)


def _completed(run: PolicyRun) -> bool:
    return run.status == PolicyRunStatus.COMPLETED and all(
        vm.status == JobStatus.COMPLETED for vm in run.vms
    )


async def follow(hub: HubClient, run: PolicyRun) -> PolicyRun:
    """Poll the run until it ended, saying on standard error how many VMs ended."""
    said = ""
    while run.status == PolicyRunStatus.RUNNING:
        ended = sum(vm.status is None or vm.status.finished for vm in run.vms)
        note = f"run {run.id}: {ended} of {len(run.vms)} VMs ended"
        if note != said:
            err_console.print(note, highlight=False)
            said = note
        await asyncio.sleep(WAIT_POLL_SECONDS)
        run = await hub.policy_run(run.id)
    return run


@policy_app.command("run")
def policy_run(
    name: str = typer.Argument(..., help=NAME_HELP),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run to its end: exit 0 only if every VM completed."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run the policy now: its VMs are resolved and queued (exit 1 when the run failed
    at once: a path gone, vCenter unreachable). With --wait, follow the run
    (interrupting stops only the following) and exit 0 when every VM's backup
    completed, 1 otherwise."""

    async def run(hub: HubClient) -> PolicyRun:
        started = await hub.run_policy(name)
        return await follow(hub, started) if wait else started

    ended = on_hub(run)
    if as_json:
        print(ended.model_dump_json(indent=2))
    else:
        print_run(ended)
    if (wait and not _completed(ended)) or ended.status == PolicyRunStatus.FAILED:
        raise typer.Exit(1)
