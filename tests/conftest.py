"""Shared fixtures: a private data folder per test, and the real databases.

MariaDB: when ``SENDENSE_TEST_MYSQL_URL`` names a server, tests use it; otherwise the
session starts its own ``mariadbd`` on a private socket and port under a temporary
folder, and stops it at the end (nothing is left running).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import Settings, get_settings

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.exports",
    "tests.fixtures.sshd",
    "tests.fixtures.services",
    "tests.fixtures.points",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` when it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def sendense_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data folder and no config file from the machine."""
    home = tmp_path / "home"
    monkeypatch.setenv("SENDENSE_HOME", str(home))
    monkeypatch.setenv("SENDENSE_CONFIG", "")
    for key in list(os.environ):
        if key.startswith("SENDENSE_") and key not in ("SENDENSE_HOME", "SENDENSE_CONFIG"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def settings(sendense_home: Path) -> Settings:
    return get_settings()


class MariaDB:
    """A throwaway mariadbd with its own data folder, socket and port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if install is None or not Path(mariadbd).exists():
            raise RuntimeError("MariaDB is not installed: run `make setup` (mariadb-server)")
        subprocess.run(
            [
                install,
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={self.base / 'mysqld.pid'}",
                f"--log-error={self.base / 'error.log'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._ready, timeout=60, what="mariadbd to accept connections")
        self.sql(
            "CREATE USER 'sendense'@'127.0.0.1' IDENTIFIED BY 'test-only-password';"
            "GRANT ALL ON *.* TO 'sendense'@'127.0.0.1';"
        )

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            log = (self.base / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mariadbd exited: {log}")
        return (
            self.socket.exists()
            and subprocess.run(
                ["mariadb", f"--socket={self.socket}", "-uroot", "-e", "SELECT 1"],
                capture_output=True,
            ).returncode
            == 0
        )

    def sql(self, statement: str, database: str = "") -> str:
        out = subprocess.run(
            ["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-B", "-e", statement, database],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def new_database(self) -> str:
        name = f"sendense_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        return f"mysql+pymysql://sendense:test-only-password@127.0.0.1:{self.port}/{name}?charset=utf8mb4"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each engine the product supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server: MariaDB = request.getfixturevalue("mariadb")
    return server.new_database()
