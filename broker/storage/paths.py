"""Where the broker keeps things, from platformdirs.

`XDG_CONFIG_HOME`, `XDG_DATA_HOME`, `XDG_STATE_HOME` and `XDG_RUNTIME_DIR`
move everything, which is how the tests isolate themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Paths", "ensure_private_dir", "APP_NAME"]

APP_NAME = "mcp-token-broker"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` as 0700 if missing; tighten it if it is ours and looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            state_dir=Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)),
        )

    @property
    def runtime_dir(self) -> Path:
        # Not platformdirs' user_runtime_dir: its last fallback is a shared temp
        # dir (see broker.client.socketpath), and the service and its clients must agree.
        from ..client.socketpath import runtime_dir

        return Path(runtime_dir())

    @property
    def connections_file(self) -> Path:
        return self.config_dir / "connections.json"

    @property
    def vault_file(self) -> Path:
        return self.data_dir / "vault.json"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "store.lock"
