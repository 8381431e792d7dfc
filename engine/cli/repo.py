"""``sendense repo``: where restore points are kept."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from engine.cli.common import console, db_session
from engine.repository import add_repository, list_repositories, usage

repo_app = typer.Typer(help="Backup repositories.", no_args_is_help=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


@repo_app.command("add")
def repo_add(
    name: str = typer.Option(..., "--name", help="A unique name."),
    path: Path = typer.Option(..., "--path", help="A folder; made if missing."),
) -> None:
    """Register a folder as a repository (must be writable and not inside another)."""
    with db_session() as session:
        repo = add_repository(session, name, path)
        console.print(f"repository {repo.id} ({repo.name}) at {repo.path}", highlight=False)


@repo_app.command("list")
def repo_list() -> None:
    """Show every repository with its size used and the free space where it lives."""
    table = Table("id", "name", "path", "used", "free")
    with db_session() as session:
        for repo in list_repositories(session):
            path = Path(repo.path)
            if path.is_dir():
                u = usage(path)
                used, free = human_bytes(u.used_bytes), human_bytes(u.free_bytes)
            else:
                used, free = "-", "missing"
            table.add_row(str(repo.id), repo.name, repo.path, used, free)
    console.print(table)
