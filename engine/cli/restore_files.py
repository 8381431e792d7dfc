"""``sendense restore files POINT --disk KEY ls|get|partitions``: single files out of a
restore point, read by the hub from the point's disk (nothing mounted anywhere) and
written here, so it works on any machine that reaches the hub.

A disk with one file system needs no ``--partition``; with several, ``ls`` without a
path shows them (what to pick), and every other command fails with the hub's one line
listing them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from pydantic import TypeAdapter
from rich.table import Table
from typer.core import TyperGroup

from engine.cli.common import console, err_console, on_hub
from engine.contract.files import FileEntry, FileKind, FolderListing, Partition
from engine.hub_client import HubClient


class _PointGroup(TyperGroup):
    """``files POINT --disk KEY ls``: click stops reading a group's options at its first
    argument, so the options before the command's name are moved in front of POINT."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click
        commands = set(self.list_commands(ctx))
        at = next((i for i, a in enumerate(args) if a in commands), len(args))
        head: list[str] = []
        options: list[str] = []
        i = 0
        while i < at:
            if args[i] == "--disk" and i + 1 < at:
                options += args[i : i + 2]
                i += 2
                continue
            (options if args[i].startswith("--disk=") else head).append(args[i])
            i += 1
        return super().parse_args(ctx, [*options, *head, *args[at:]])


files_app = typer.Typer(
    cls=_PointGroup,
    help="Single files out of a point's disk: list, extract, partitions.",
    no_args_is_help=True,
)

_PARTITIONS = TypeAdapter(list[Partition])
_TYPE_BITS = {
    FileKind.FILE: stat.S_IFREG,
    FileKind.DIRECTORY: stat.S_IFDIR,
    FileKind.SYMLINK: stat.S_IFLNK,
    FileKind.OTHER: 0,
}


@dataclass(frozen=True)
class _Disk:
    point: str
    disk: int


def _disk(ctx: typer.Context) -> _Disk:
    disk: _Disk = ctx.obj
    return disk


@files_app.callback()
def files_group(
    ctx: typer.Context,
    point: str = typer.Argument(..., help="The point's id (sendense restore-points list)."),
    disk: int = typer.Option(..., "--disk", help="The disk's key (2000, 2001, ...)."),
) -> None:
    """Single files out of one disk of a restore point, without mounting anything."""
    ctx.obj = _Disk(point, disk)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def mode_string(entry: FileEntry) -> str:
    """``ls -l``'s ``drwxr-xr-x``; ``?`` for a device, FIFO or socket."""
    text = stat.filemode(_TYPE_BITS[entry.kind] | entry.mode)
    return ("?" + text[1:]) if entry.kind is FileKind.OTHER else text


def listing_lines(listing: FolderListing) -> list[str]:
    """One line per entry, like ``ls -l``: mode, size, mtime, name (``-> target``)."""
    rows = [
        (
            mode_string(e),
            str(e.size_bytes),
            f"{e.mtime.astimezone():%Y-%m-%d %H:%M}" if e.mtime else "-",
            e.name + (f" -> {e.symlink_target}" if e.kind is FileKind.SYMLINK else ""),
        )
        for e in listing.entries
    ]
    width = max((len(r[1]) for r in rows), default=0)
    return [f"{m}  {s:>{width}}  {t}  {n}" for m, s, t, n in rows]


def _print_partitions(partitions: list[Partition]) -> None:
    table = Table("#", "scheme", "type", "name", "offset", "size", "file system", "label")
    for p in partitions:
        table.add_row(
            str(p.number),
            p.scheme or "whole disk",
            p.type or "",
            p.name or "",
            str(p.offset_bytes),
            _size(p.size_bytes),
            p.filesystem or f"({p.found or 'none'})",
            p.label or "",
        )
    console.print(table)


@files_app.command("partitions")
def files_partitions(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")
) -> None:
    """The disk's partitions and the file system in each (0: a disk without a table)."""
    d = _disk(ctx)
    partitions = on_hub(lambda hub: hub.partitions(d.point, d.disk))
    if as_json:
        print(_PARTITIONS.dump_json(partitions, indent=2).decode())
        return
    _print_partitions(partitions)


@files_app.command("ls")
def files_ls(
    ctx: typer.Context,
    path: str | None = typer.Argument(None, help="A folder or file (default: the root)."),
    partition: int | None = typer.Option(None, "--partition", help="The partition's number."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """A folder's entries like ``ls -l``. With no path and no --partition on a disk with
    several file systems: the partitions to choose from."""
    d = _disk(ctx)

    async def run(hub: HubClient) -> FolderListing | list[Partition]:
        if path is None and partition is None:
            partitions = await hub.partitions(d.point, d.disk)
            if sum(p.filesystem is not None for p in partitions) > 1:
                return partitions
        return await hub.list_folder(d.point, d.disk, path or "/", partition)

    answer = on_hub(run)
    if isinstance(answer, list):
        if as_json:
            print(_PARTITIONS.dump_json(answer, indent=2).decode())
            return
        _print_partitions(answer)
        err_console.print("several file systems: choose one with --partition N", highlight=False)
        return
    if as_json:
        print(answer.model_dump_json(indent=2))
        return
    for line in listing_lines(answer):
        print(line)


@files_app.command("get")
def files_get(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files and folders to extract."),
    to: Path = typer.Option(..., "--to", help="The folder to write them into (made if missing)."),
    partition: int | None = typer.Option(None, "--partition", help="The partition's number."),
) -> None:
    """Extract files and folders (each under its own name) with their modes and times;
    symlinks come as symlinks."""
    from engine.extract import ExtractProgress, ExtractResult, check_target, extract

    d = _disk(ctx)
    target = to.expanduser().absolute()
    check_target(target)

    async def run(hub: HubClient) -> ExtractResult:
        if not err_console.is_terminal:
            return await extract(hub, d.point, d.disk, paths, target, partition=partition)
        from engine.node.progress import disk_bars

        with disk_bars(err_console) as bars:
            task = bars.add_task("extracting", total=None, note="")

            def show(p: ExtractProgress) -> None:
                bars.update(task, completed=p.bytes_done, total=p.bytes_total, note=p.path)

            return await extract(
                hub, d.point, d.disk, paths, target, partition=partition, progress=show
            )

    result = on_hub(run)
    for line in result.skipped:
        err_console.print(f"skipped {line}", highlight=False, soft_wrap=True)
    console.print(
        f"{_count(result.files, 'file')}, {_count(result.folders, 'folder')}, "
        f"{_count(result.symlinks, 'symlink')}, {_size(result.bytes)} into {target}",
        highlight=False,
        soft_wrap=True,
    )


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
