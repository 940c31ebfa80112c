"""User preferences: `config.json` in the config dir. Non-secret.

    {"client_policy": "ask" | "allow" | "deny"}

Missing file or keys mean defaults; a damaged file is an error, not a
silent reset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import SettingsCorrupt
from .grants import POLICIES
from .paths import Paths

__all__ = ["Config", "load_config"]


@dataclass(frozen=True)
class Config:
    #: Policy for clients without a grant; `serve` defaults to allow, the GUI to ask.
    client_policy: str = "allow"


def load_config(paths: Paths, *, default_policy: str = "allow") -> Config:
    path = paths.config_dir / "config.json"
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
    return Config(client_policy=policy)
