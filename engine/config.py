"""Settings: one TOML file plus ``SENDENSE_*`` environment variables, over embedded defaults.

With no file at all everything lives under one data folder (``SENDENSE_HOME``), so a
fresh machine, a test and a lab all work with zero set-up.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from engine.errors import BadInput

SYSTEM_CONFIG = Path("/etc/sendense/sendense.toml")
USER_CONFIG = Path("~/.config/sendense/sendense.toml")


class ConfigError(BadInput):
    """Settings that cannot be used: a missing file, bad TOML, or a bad value."""


class Section(BaseModel):
    """A settings table: an unknown key is a typo to report, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


def default_home() -> Path:
    return Path(os.environ.get("SENDENSE_HOME") or "~/.local/share/sendense").expanduser()


def config_file() -> Path | None:
    """The TOML file in force: ``SENDENSE_CONFIG``, else the system file, else the user's."""
    explicit = os.environ.get("SENDENSE_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for candidate in (SYSTEM_CONFIG, USER_CONFIG.expanduser()):
        if candidate.is_file():
            return candidate
    return None


class HubSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8082, ge=1, le=65535)
    # Where nodes and consoles reach the hub; defaults to http://host:port.
    url: str | None = None
    # How often in-memory progress is written to the database.
    progress_flush_seconds: float = Field(2.0, gt=0)
    # For tests and drills: the hub's time is read from this file (engine/clock.py).
    clock_file: Path | None = None

    @property
    def public_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"


class NodeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    # The hub this node reports to (through the tunnel's 8082 forward when tunnelled).
    hub_url: str = "http://127.0.0.1:8082"
    # The hub's API token; empty means "read the token file in the data folder".
    hub_token: SecretStr = SecretStr("")
    # The name under which a hub knows this node by default.
    name: str = "local"


class NbdSettings(Section):
    bind: str = "127.0.0.1"
    port_min: int = Field(10100, ge=1, le=65535)
    port_max: int = Field(10200, ge=1, le=65535)
    # Clients allowed per export: the copier opens up to this many connections.
    shared: int = Field(8, ge=1, le=64)
    start_timeout: float = Field(10.0, gt=0)
    stop_grace: float = Field(5.0, gt=0)
    qemu_nbd: str = "qemu-nbd"
    qemu_img: str = "qemu-img"

    @model_validator(mode="after")
    def _range(self) -> NbdSettings:
        if self.port_min > self.port_max:
            raise ValueError(f"nbd.port_min {self.port_min} is above nbd.port_max {self.port_max}")
        return self


class CopySettings(Section):
    # 1 MiB requests, 16 in flight per connection: the same buffer bound as nbdcopy's
    # 64 x 256 KiB, but a quarter of the commands, and so of the per-command work in
    # the copier (Python), the source server and qemu-nbd, which share the node's CPUs.
    request_size: int = Field(1024 * 1024, ge=4096, le=32 * 1024 * 1024)
    requests_in_flight: int = Field(16, ge=1, le=1024)
    connections: int = Field(4, ge=1, le=16)
    # Verification: the copier takes a digest of every chunk of this size (a power of
    # two, and a divisor of request_size: each read holds whole chunks). An incremental
    # grows its changed areas to whole chunks, so 64 KiB keeps scattered small changes
    # at about 1x the changed bytes read.
    chunk_size: int = Field(64 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)


class VddkSettings(Section):
    libdir: str = "/usr/lib/vmware-vix-disklib"
    transports: str = "nbdssl:nbd"
    nbdkit: str = "nbdkit"


class TunnelSettings(Section):
    hub_ssh_host: str = "127.0.0.1"
    hub_ssh_port: int = Field(22, ge=1, le=65535)
    user: str = "sendense"
    key_file: Path | None = None
    known_hosts: Path | None = None
    keepalive_seconds: float = Field(15.0, gt=0)
    # The node API the hub reaches through the remote forward.
    remote_node_port: int = Field(9081, ge=1, le=65535)
    # Where the node's local forward listeners bind (another loopback address lets a hub
    # and a tunnelled node share one machine, as the tunnelled tests do).
    local_host: str = "127.0.0.1"
    keepalive_count_max: int = Field(3, ge=1)
    connect_timeout: float = Field(15.0, gt=0)
    # Reconnect backoff: doubles from min after each failed attempt, capped at max.
    reconnect_min_seconds: float = Field(1.0, gt=0)
    reconnect_max_seconds: float = Field(60.0, gt=0)
    # SSH connections, each in its own process, sharing the local ports: one process
    # (and one sshd process on the hub) tops out at about one CPU core of crypto.
    connections: int = Field(2, ge=1, le=16)


class QueueSettings(Section):
    """How many jobs run at once. vSphere's NBD transport has per-host connection limits
    and a datastore slows for every stream read from it, so disks are limited per ESXi
    host and per datastore as well as per node and overall. A node's own ``max_jobs``
    and ``max_disks`` (``sendense nodes add``) override the per-node values. The hub's
    NBD port range bounds the disks running at once too (one export each)."""

    jobs_total: int = Field(32, ge=1, le=100_000)
    jobs_per_node: int = Field(4, ge=1, le=1000)
    disks_per_node: int = Field(8, ge=1, le=10_000)
    disks_per_host: int = Field(8, ge=1, le=10_000)
    disks_per_datastore: int = Field(8, ge=1, le=10_000)
    # How often the queue is looked at besides when a job ends or is queued.
    dispatch_seconds: float = Field(1.0, gt=0)


class SchedulerSettings(Section):
    # A run the hub was down for fires once when it comes back within this window;
    # later than that it is recorded as missed.
    grace_seconds: float = Field(6 * 3600, ge=0)
    tick_seconds: float = Field(1.0, gt=0)


class FleetSettings(Section):
    """The hub's watch on its nodes: a health check every ``heartbeat_seconds``; a node
    unanswered for ``down_after_seconds`` gets no new jobs and its running jobs fail."""

    heartbeat_seconds: float = Field(5.0, gt=0)
    down_after_seconds: float = Field(30.0, gt=0)


class LabSettings(Section):
    port: int = Field(8989, ge=1, le=65535)


class Settings(BaseSettings):
    """Everything configurable. Paths left empty are placed under ``home``."""

    model_config = SettingsConfigDict(
        env_prefix="SENDENSE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Field(default_factory=default_home)
    database_url: SecretStr | None = None
    master_key_file: Path | None = None
    api_token_file: Path | None = None
    log_dir: Path | None = None
    run_dir: Path | None = None
    default_repository: Path | None = None

    hub: HubSettings = HubSettings()
    node: NodeSettings = NodeSettings()
    nbd: NbdSettings = NbdSettings()
    copier: CopySettings = CopySettings()
    vddk: VddkSettings = VddkSettings()
    tunnel: TunnelSettings = TunnelSettings()
    lab: LabSettings = LabSettings()
    queue: QueueSettings = QueueSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    fleet: FleetSettings = FleetSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _enough_nbd_clients(self) -> Settings:
        # qemu-nbd queues a client beyond --shared without a word: the copier would hang.
        if self.nbd.shared < self.copier.connections:
            raise ValueError(
                f"nbd.shared ({self.nbd.shared}) must be at least copier.connections "
                f"({self.copier.connections}): each copier connection is one NBD client"
            )
        return self

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        home = self.home.expanduser()
        self.home = home
        self.master_key_file = (self.master_key_file or home / "master.key").expanduser()
        self.api_token_file = (self.api_token_file or home / "api-token").expanduser()
        self.log_dir = (self.log_dir or home / "logs").expanduser()
        self.run_dir = (self.run_dir or home / "run").expanduser()
        self.default_repository = (self.default_repository or home / "repository").expanduser()
        if self.database_url is None:
            self.database_url = SecretStr(f"sqlite:///{home / 'sendense.db'}")
        return self

    # Typed accessors: after validation these are never None.
    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url.get_secret_value()

    @property
    def key_path(self) -> Path:
        assert self.master_key_file is not None
        return self.master_key_file

    @property
    def token_path(self) -> Path:
        assert self.api_token_file is not None
        return self.api_token_file

    @property
    def logs(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir

    @property
    def run(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir

    @property
    def repository_default(self) -> Path:
        assert self.default_repository is not None
        return self.default_repository

    def masked(self) -> dict[str, Any]:
        """The settings as plain data, secrets (and passwords inside URLs) masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.db_url)
        data["node"]["hub_token"] = "********" if self.node.hub_token.get_secret_value() else ""
        data["config_file"] = str(config_file() or "(none: embedded defaults)")
        return data


def mask_url(url: str) -> str:
    """Hide the password of ``scheme://user:password@host/...``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in creds else url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file()} is not valid TOML: {exc}") from None


SECRET_FIELDS = {"database_url", "hub_token", "notify", "password", "vcenter_password"}


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad setting, its problem and (unless secret) the value given."""
    return "invalid settings: " + describe_errors(exc)


def describe_errors(exc: ValidationError) -> str:
    """Each refused field of a model, its problem and (unless secret) the value given, in
    one line: what a setting or a command's input gets instead of pydantic's report."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        # Our own validators' messages already name the field; drop pydantic's prefix.
        problem = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        given = ""
        secret = SECRET_FIELDS & {str(p) for p in err["loc"]}
        if where and "input" in err and not secret and not isinstance(err["input"], dict):
            given = f" (got {err['input']!r})"
        parts.append(f"{where}: {problem}{given}" if where else problem)
    return "; ".join(parts)


def ensure_dirs(settings: Settings) -> None:
    """Create the data folder and its private sub-folders (0700: they hold keys and tokens)."""
    for path in (settings.home, settings.logs, settings.run):
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot make the folder {path}: {exc.strerror}") from None
