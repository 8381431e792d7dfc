"""Settings: TOML file, environment overrides, defaults under SENDENSE_HOME, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import ConfigError, get_settings
from tests.fixtures.cli import sendense


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_live_under_the_data_folder(sendense_home: Path) -> None:
    s = get_settings()
    assert s.home == sendense_home
    assert s.db_url == f"sqlite:///{sendense_home / 'sendense.db'}"
    assert s.key_path == sendense_home / "master.key"
    assert s.token_path == sendense_home / "api-token"
    assert s.logs == sendense_home / "logs"
    assert s.run == sendense_home / "run"
    assert s.repository_default == sendense_home / "repository"
    assert (s.nbd.bind, s.nbd.port_min, s.nbd.port_max) == ("127.0.0.1", 10100, 10200)


def test_toml_file_from_sendense_config_and_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(
        tmp_path / "s.toml",
        "[nbd]\nport_min = 12000\nport_max = 12010\nshared = 4\n\n[hub]\nport = 9999\n",
    )
    monkeypatch.setenv("SENDENSE_CONFIG", str(config))
    get_settings.cache_clear()
    s = get_settings()
    assert (s.nbd.port_min, s.nbd.port_max, s.nbd.shared, s.hub.port) == (12000, 12010, 4, 9999)
    monkeypatch.setenv("SENDENSE_NBD__PORT_MIN", "12005")
    get_settings.cache_clear()
    s = get_settings()
    assert (s.nbd.port_min, s.nbd.port_max) == (12005, 12010)  # env beats the file


def test_cli_config_option_and_home_config(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "s.toml", "[nbd]\nport_min = 12001\nport_max = 12002\n")
    shown = sendense("--config", str(config), "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["nbd"]["port_min"] == 12001 and data["config_file"] == str(config)
    # With no --config and no SENDENSE_CONFIG, ~/.config/sendense/sendense.toml is read.
    if Path("/etc/sendense/sendense.toml").exists():
        pytest.skip("this machine has /etc/sendense/sendense.toml, which comes first")
    user = tmp_path / "user"
    (user / ".config" / "sendense").mkdir(parents=True)
    write_toml(user / ".config" / "sendense" / "sendense.toml", "[hub]\nport = 8123\n")
    shown = sendense("config", "show", "--json", extra_env={"HOME": str(user)})
    assert json.loads(shown.stdout)["hub"]["port"] == 8123


def test_config_show_masks_secrets() -> None:
    shown = sendense(
        "config",
        "show",
        extra_env={
            "SENDENSE_DATABASE_URL": "mysql+pymysql://backup:db-S3cret-pw@db.test/sendense",
            "SENDENSE_NODE__HUB_TOKEN": "tok-S3cret-value",
        },
    )
    assert shown.returncode == 0, shown.stderr
    assert "db-S3cret-pw" not in shown.stdout and "tok-S3cret-value" not in shown.stdout
    assert "mysql+pymysql://backup:********@db.test/sendense" in shown.stdout
    assert "node.hub_token = ********" in shown.stdout


@pytest.mark.parametrize(
    ("env", "toml", "expected"),
    [
        ({"SENDENSE_NBD__PORT_MIN": "abc"}, None, "nbd.port_min: Input should be a valid integer"),
        ({"SENDENSE_NBD__PORT_MIN": "10300"}, None, "nbd.port_min 10300 is above nbd.port_max"),
        ({}, "[nbd]\nport_mni = 1\n", "nbd.port_mni: Extra inputs are not permitted"),
        ({"SENDENSE_NBD__SHARED": "2"}, None, "nbd.shared (2) must be at least copier.connections"),
        ({}, "[nbd\n", "is not valid TOML"),
        ({"SENDENSE_CONFIG": "/nonexistent/sendense.toml"}, None, "does not exist"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    toml: str | None,
    expected: str,
) -> None:
    if toml is not None:
        env = {**env, "SENDENSE_CONFIG": str(write_toml(tmp_path / "bad.toml", toml))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [{"SENDENSE_NBD__PORT_MIN": "abc"}, {"SENDENSE_CONFIG": "/nonexistent/sendense.toml"}],
)
def test_the_cli_prints_one_line_and_exits_2_on_bad_settings(env: dict[str, str]) -> None:
    done = sendense("config", "show", extra_env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_a_bad_secret_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml(tmp_path / "s.toml", "[node]\nhub_token = 987654321\n")
    monkeypatch.setenv("SENDENSE_CONFIG", str(config))
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert "node.hub_token" in str(caught.value) and "987654321" not in str(caught.value)
    assert caught.value.exit_code == 2
