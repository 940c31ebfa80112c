"""The connections file and the vault, changed together under one lock.

`Store.transaction()` takes an exclusive `flock`, loads both files fresh,
hands out mutable dicts, and on a clean exit writes back whichever changed
(the vault first, so a crash between the two never leaves settings that
point at secrets that were not written). Readers need no lock: both files
are replaced atomically. On an event loop, `update` runs a transaction on a
worker thread: the lock may wait up to 15 s for another process.

A vault record whose name is missing from the settings is kept: the
settings file is plaintext and may be lost or edited by hand, and that must
never wipe tokens. Such orphans are listed as such, and `remove` deletes them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import SchemaTooNew, SettingsCorrupt, UnknownConnection
from ..model import ConnectionSettings, ConnectionState
from .atomic import atomic_write, file_lock, off_loop, remove_stale_temp_files
from .keystore import KeyStore
from .paths import Paths
from .vault import Vault

__all__ = ["Store", "Transaction"]

SETTINGS_FORMAT = "mcp-token-broker-connections"
SETTINGS_SCHEMA = 1
MAX_SETTINGS_BYTES = 16 << 20

T = TypeVar("T")


@dataclass
class Transaction:
    settings: dict[str, ConnectionSettings]
    states: dict[str, ConnectionState]

    def get(self, name: str) -> tuple[ConnectionSettings, ConnectionState]:
        if name not in self.settings:
            raise UnknownConnection(name)
        return self.settings[name], self.states.get(name) or ConnectionState()


class Store:
    def __init__(self, paths: Paths, keystore_factory: Any) -> None:
        """`keystore_factory` is called once, on first vault access, so that
        commands that never touch secrets do not need a keyring."""
        self.paths = paths
        self._keystore_factory = keystore_factory
        self._vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            keystore: KeyStore = self._keystore_factory()
            self._vault = Vault(self.paths.vault_file, keystore)
        return self._vault

    # -- settings file ----------------------------------------------------

    def load_settings(self) -> dict[str, ConnectionSettings]:
        path = self.paths.connections_file
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_SETTINGS_BYTES + 1)
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != SETTINGS_FORMAT:
                raise ValueError("not a connections file")
            if not isinstance(doc.get("schema"), int):
                raise ValueError("no schema")
            if doc["schema"] > SETTINGS_SCHEMA:
                raise SchemaTooNew(f"{path} was written by a newer mcp-token-broker; upgrade to read it")
            return {name: ConnectionSettings.from_json(name, value) for name, value in doc["connections"].items()}
        except SchemaTooNew:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise SettingsCorrupt(
                f"the connections file {path} is damaged and was left untouched; fix or move it aside"
            ) from None

    def _save_settings(self, settings: dict[str, ConnectionSettings]) -> None:
        doc = {
            "format": SETTINGS_FORMAT,
            "schema": SETTINGS_SCHEMA,
            "connections": {name: s.to_json() for name, s in sorted(settings.items())},
        }
        remove_stale_temp_files(self.paths.connections_file)
        atomic_write(self.paths.connections_file, json.dumps(doc, indent=2).encode() + b"\n")

    # -- vault ------------------------------------------------------------

    def load_states(self) -> dict[str, ConnectionState]:
        return {name: ConnectionState.from_json(value) for name, value in self.vault.load().items()}

    def has_vault(self) -> bool:
        """Whether a vault file exists (so reading it may need the keyring)."""
        return self.paths.vault_file.exists()

    # -- both -------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, secrets: bool = True) -> Iterator[Transaction]:
        with file_lock(self.paths.lock_file):
            settings = self.load_settings()
            states = self.load_states() if secrets else {}
            before_settings = {k: v.to_json() for k, v in settings.items()}
            before_states = {k: v.to_json() for k, v in states.items()}
            txn = Transaction(settings, states)
            yield txn
            after_states = {k: v.to_json() for k, v in txn.states.items()}  # orphans too
            if secrets and after_states != before_states:
                self.vault.save(after_states)
            after_settings = {k: v.to_json() for k, v in txn.settings.items()}
            if after_settings != before_settings:
                self._save_settings(txn.settings)

    async def update(self, change: Callable[[Transaction], T], *, secrets: bool = True) -> T:
        """`change(txn)` inside `transaction()`, on a worker thread (`off_loop`):
        how code on an event loop changes the files."""

        def run() -> T:
            with self.transaction(secrets=secrets) as txn:
                return change(txn)

        return await off_loop(run)
