"""User preferences: `config.json` in the config dir. Non-secret.

    {"client_policy": "ask" | "allow" | "deny", "refresh_margin": 60}

Missing file or keys mean defaults; a damaged file is an error, not a
silent reset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import SettingsCorrupt
from .atomic import atomic_write
from .paths import Paths

__all__ = ["Config", "load_config", "save_config", "POLICIES"]

#: What the service does for a client without a grant.
POLICIES: tuple[str, ...] = ("ask", "allow", "deny")


@dataclass(frozen=True)
class Config:
    #: Policy for clients without a grant; `serve` defaults to allow, the GUI to ask.
    client_policy: str = "allow"
    #: Refresh at least this many seconds before expiry (60 to 3600).
    refresh_margin: int = 60


def _path(paths: Paths) -> Path:
    return paths.config_dir / "config.json"


def load_config(paths: Paths, *, default_policy: str = "allow") -> Config:
    path = _path(paths)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Config(client_policy=default_policy)
    except ValueError:
        raise SettingsCorrupt(f"{path} is not valid JSON; fix or remove it") from None
    if not isinstance(doc, dict):
        raise SettingsCorrupt(f"{path} must hold a JSON object")
    policy = doc.get("client_policy", default_policy)
    if policy not in POLICIES:
        raise SettingsCorrupt(f"{path}: client_policy must be one of {', '.join(POLICIES)}")
    margin = doc.get("refresh_margin", 60)
    if not isinstance(margin, int) or isinstance(margin, bool) or not 60 <= margin <= 3600:
        raise SettingsCorrupt(f"{path}: refresh_margin must be a whole number of seconds from 60 to 3600")
    return Config(client_policy=policy, refresh_margin=margin)


def save_config(paths: Paths, config: Config) -> None:
    atomic_write(_path(paths), json.dumps(asdict(config), indent=2).encode() + b"\n")
