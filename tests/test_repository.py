"""Repositories: restore point layout, safe names, and the checks on a new folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.db.session import session_scope, upgrade
from engine.repository import (
    RepositoryError,
    add_repository,
    ensure_default_repository,
    list_repositories,
    restore_point_path,
    safe_component,
    usage,
)

AWKWARD_NAMES = [
    "web 01",
    "Ünïcødé-虚拟机",
    "a/b",
    "a\\b",
    "..",
    ".",
    " padded ",
    "nul\0byte",
    "x" * 300,
    "💾" * 100,
    "",
]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path / 'repo.db'}"
    upgrade(url)
    with session_scope(url) as s:
        yield s


def test_restore_point_layout(tmp_path: Path) -> None:
    path = restore_point_path(tmp_path, "pgtest1", 2000, "backup-pgtest1-1700000000")
    assert path == tmp_path / "pgtest1" / "2000" / "backup-pgtest1-1700000000.qcow2"
    assert restore_point_path(tmp_path, "pgtest1", 2001, "backup-pgtest1-1700000000") != path


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_any_vm_name_gives_a_file_inside_the_repository(tmp_path: Path, name: str) -> None:
    repo = tmp_path / "repo"
    path = restore_point_path(repo, name, 2000, "backup-x-1")
    assert path.parent.parent.parent == repo  # exactly <repo>/<vm>/<disk>/<file>
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # the file system accepts it
    assert path.resolve().is_relative_to(repo.resolve())


def test_names_that_differ_only_in_unsafe_characters_get_different_folders() -> None:
    names = ["a/b", "a_b", "a\\b", "a\0b", ".", "_.", "..", "_.."]
    assert len({safe_component(n) for n in names}) == len(names)
    assert safe_component("pgtest1") == "pgtest1"  # a plain name is kept as it is
    assert safe_component("web 01") == "web 01"


@given(st.text())
def test_safe_component_is_always_a_single_storable_name(name: str) -> None:
    part = safe_component(name)
    assert part and part not in (".", "..")
    assert "/" not in part and "\0" not in part
    assert len(part.encode()) + len(".qcow2") <= 255


@given(st.text(), st.text())
def test_distinct_names_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert safe_component(a) != safe_component(b)


def test_add_makes_the_folder_and_lists_it(session: Session, tmp_path: Path) -> None:
    repo = add_repository(session, "main", tmp_path / "new" / "repo")
    assert (tmp_path / "new" / "repo").is_dir()
    assert [(r.id, r.name, r.path) for r in list_repositories(session)] == [
        (repo.id, "main", str((tmp_path / "new" / "repo").resolve()))
    ]


@pytest.mark.parametrize("other", ["repo/inner", ".", "repo"])
def test_overlapping_repositories_are_refused(session: Session, tmp_path: Path, other: str) -> None:
    first = add_repository(session, "first", tmp_path / "repo")
    with pytest.raises(RepositoryError, match=f"overlaps repository {first.id} \\(first\\)"):
        add_repository(session, "second", tmp_path / other)


def test_overlap_is_seen_through_symlinks(session: Session, tmp_path: Path) -> None:
    add_repository(session, "first", tmp_path / "repo")
    (tmp_path / "link").symlink_to(tmp_path / "repo")
    with pytest.raises(RepositoryError, match="overlaps"):
        add_repository(session, "second", tmp_path / "link" / "sub")


def test_duplicate_and_empty_names_are_refused(session: Session, tmp_path: Path) -> None:
    add_repository(session, "main", tmp_path / "a")
    with pytest.raises(RepositoryError, match="already exists"):
        add_repository(session, "main", tmp_path / "b")
    with pytest.raises(RepositoryError, match="empty"):
        add_repository(session, "  ", tmp_path / "c")


def test_a_file_in_place_of_the_folder_is_refused(session: Session, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError, match="cannot create repository folder"):
        add_repository(session, "main", tmp_path / "file")


def test_an_unwritable_folder_is_refused(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        # Root ignores mode bits; the immutable attribute stops root too.
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot make a folder immutable here (chattr +i refused)")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o500)
        undo = ["chmod", "0700", str(folder)]
    try:
        with pytest.raises(RepositoryError, match="is not writable"):
            add_repository(session, "main", folder)
    finally:
        subprocess.run(undo, check=True)
    assert list_repositories(session) == []


def test_usage_counts_allocated_bytes(tmp_path: Path) -> None:
    before = usage(tmp_path)
    (tmp_path / "data").write_bytes(os.urandom(1024 * 1024))
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as fh:
        fh.truncate(512 * 1024 * 1024)  # allocates nothing
    after = usage(tmp_path)
    assert 1024 * 1024 <= after.used_bytes - before.used_bytes < 2 * 1024 * 1024
    assert 0 < after.free_bytes <= after.total_bytes


def test_default_repository_is_registered_once(session: Session, tmp_path: Path) -> None:
    first = ensure_default_repository(session, tmp_path / "default")
    again = ensure_default_repository(session, tmp_path / "default")
    assert first.id == again.id and len(list_repositories(session)) == 1


@pytest.mark.parametrize("place", ["/", "/etc", "/etc/sendense", "/usr/lib/x", "/proc", "/var"])
def test_system_folders_are_refused(session: Session, settings: Settings, place: str) -> None:
    with pytest.raises(RepositoryError, match="is a system folder"):
        add_repository(session, "main", Path(place), settings)
    assert list_repositories(session) == []


def test_the_data_folder_is_refused_but_its_default_repository(
    session: Session, settings: Settings
) -> None:
    for inside in (settings.home, settings.home / "logs", settings.home / "repository-2"):
        with pytest.raises(RepositoryError, match="data folder"):
            add_repository(session, "main", inside, settings)
    default = ensure_default_repository(session, settings.repository_default, settings)
    assert Path(default.path) == settings.repository_default.resolve()
    # Without settings given, the process's own (this test's data folder) are used.
    with pytest.raises(RepositoryError, match="data folder"):
        add_repository(session, "other", settings.home / "other")
