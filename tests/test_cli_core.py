"""The ``sendense`` command's core groups, run as an operator runs them (a subprocess)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import Settings
from engine.credentials import VMwareCredentialService
from engine.db.session import current_revision, session_scope
from tests.fixtures.cli import sendense

PASSWORD = "Cli-Pa55word-never-printed-e41b"
THUMB = ":".join(["AB"] * 32)


def add_vcenter(*extra: str, input: str = PASSWORD + "\n") -> tuple[int, str, str]:
    done = sendense(
        "vcenter",
        "add",
        "--host",
        "vc.example.test:8443",
        "--username",
        "administrator@vsphere.local",
        "--password-stdin",
        "--no-verify",
        *extra,
        input=input,
    )
    return done.returncode, done.stdout, done.stderr


def test_vcenter_add_list_and_keys_rotate(settings: Settings) -> None:
    code, out, err = add_vcenter("--thumbprint", THUMB)
    assert code == 0, err
    cid = int(out.strip())
    listed = sendense("vcenter", "list")
    assert listed.returncode == 0, listed.stderr
    assert "vc.example.test:8443" in listed.stdout
    assert "administrator@vsphere.local" in listed.stdout
    assert "ab" * 32 in listed.stdout  # stored normalised: lower-case hex, no colons
    for text in (out, err, listed.stdout, listed.stderr):
        assert PASSWORD not in text

    key_before = settings.key_path.read_bytes()
    rotated = sendense("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-sealed 1 credential" in rotated.stdout
    assert settings.key_path.read_bytes() != key_before
    with session_scope(settings.db_url) as s:
        assert VMwareCredentialService(s, settings.key_path).get_credentials(cid).password == (
            PASSWORD
        )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("--thumbprint", "not-hex"), PASSWORD, "is not a SHA-256 fingerprint"),
        (("--thumbprint", THUMB), "", "no vCenter password on standard input"),
        (("--thumbprint", THUMB, "--trust"), PASSWORD, "either --thumbprint or --trust"),
    ],
)
def test_vcenter_add_bad_input_exits_2(args: tuple[str, ...], stdin: str, message: str) -> None:
    code, out, err = add_vcenter(*args, input=stdin)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert PASSWORD not in out + err


def test_usage_errors_exit_2() -> None:
    done = sendense("vcenter", "add", "--username", "u", "--password-stdin")
    assert done.returncode == 2
    assert "--host" in done.stderr and "Traceback" not in done.stderr


def test_repo_add_list_and_overlap(tmp_path: Path) -> None:
    target = tmp_path / "backups" / "main"
    added = sendense("repo", "add", "--name", "main", "--path", str(target))
    assert added.returncode == 0, added.stderr
    assert re.search(rf"repository \d+ \(main\) at {re.escape(str(target))}", added.stdout)
    assert target.is_dir()
    listed = sendense("repo", "list")
    assert listed.returncode == 0, listed.stderr
    assert "main" in listed.stdout and str(target) in listed.stdout
    nested = sendense("repo", "add", "--name", "inner", "--path", str(target / "inner"))
    assert nested.returncode == 2
    assert nested.stderr.startswith("error: ") and "overlaps repository" in nested.stderr


def test_db_upgrade_is_idempotent(settings: Settings) -> None:
    first = sendense("db", "upgrade")
    second = sendense("db", "upgrade")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    revision = current_revision(settings.db_url)
    assert revision is not None
    assert first.stdout == second.stdout == f"database at revision {revision}\n"


def test_every_command_is_listed_and_one_command_loads_only_its_module() -> None:
    """`sendense --help` lists every command and the exit codes; `sendense nbd ...` does
    not load the database, the hub or the tunnel (start-up time counts in every scripted
    copy)."""
    import subprocess
    import sys

    from engine.cli.main import COMMANDS

    listing = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in listing for name in COMMANDS)
    assert "Exit codes: 0 done" in listing and "130 cancelled" in listing
    probe = (
        "import sys; sys.argv = ['sendense', 'nbd', '--help']\n"
        "from engine.cli import main\n"
        "try:\n    main.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('sqlalchemy', 'asyncssh', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
