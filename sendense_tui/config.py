"""The console's own few settings: where the hub is and how to prove who we are.

The console must not import the engine's settings (it is a hub client that may run on
another machine, without the engine's services beside it), so it reads the same TOML
file and ``SENDENSE_*`` variables itself, keeping only the keys it needs: the hub URL,
the API token file and the data folder.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_CONFIG = Path("/etc/sendense/sendense.toml")
USER_CONFIG_DIR = Path("~/.config/sendense")


@dataclass(frozen=True)
class ConsoleConfig:
    hub_url: str
    token: str
    home: Path
    # True when a hub URL was named: that hub may be another machine's, so the console
    # never starts one itself. A host/port alone means a local hub it may start.
    explicit: bool
    keymap_file: Path

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def _config_file(env: dict[str, str]) -> Path | None:
    explicit = env.get("SENDENSE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    for candidate in (SYSTEM_CONFIG, USER_CONFIG_DIR.expanduser() / "sendense.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_config(environ: dict[str, str] | None = None) -> ConsoleConfig:
    """Environment over TOML over embedded defaults, as the engine's settings do."""
    env = dict(os.environ if environ is None else environ)
    path = _config_file(env)
    toml = _read_toml(path)
    hub = toml.get("hub", {}) if isinstance(toml.get("hub"), dict) else {}

    home = Path(env.get("SENDENSE_HOME") or toml.get("home") or "~/.local/share/sendense")
    home = home.expanduser()

    url = env.get("SENDENSE_HUB__URL") or hub.get("url")
    host = env.get("SENDENSE_HUB__HOST") or hub.get("host")
    port = env.get("SENDENSE_HUB__PORT") or hub.get("port")
    explicit = bool(url)
    if not url:
        url = f"http://{host or '127.0.0.1'}:{port or 8082}"

    token_file = Path(
        env.get("SENDENSE_API_TOKEN_FILE") or toml.get("api_token_file") or home / "api-token"
    ).expanduser()
    token = token_file.read_text().strip() if token_file.is_file() else ""

    keymap = Path(env.get("SENDENSE_KEYMAP") or USER_CONFIG_DIR / "keymap.toml").expanduser()
    return ConsoleConfig(
        hub_url=str(url).rstrip("/"), token=token, home=home, explicit=explicit, keymap_file=keymap
    )


def reload_token(config: ConsoleConfig) -> ConsoleConfig:
    """Read the token again: a hub the console just started writes it on first start."""
    fresh = load_config()
    return ConsoleConfig(
        hub_url=config.hub_url,
        token=fresh.token or config.token,
        home=config.home,
        explicit=config.explicit,
        keymap_file=config.keymap_file,
    )
