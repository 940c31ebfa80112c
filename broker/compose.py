"""The composition root: where the environment, the config file and the
command line become a store, an engine and a service.

`serve`, the CLI's direct path (when no service runs) and the desktop app all
build through here, so a setting one of them honours, all of them honour:

==================  ===========================================================
setting             taken from
==================  ===========================================================
client policy       `--policy`, else config.json's `client_policy`, else the
                    entry point's default (allow headless, ask in the app)
refresh margin      config.json's `refresh_margin`
HTTP timeout        `MCP_TOKEN_BROKER_HTTP_TIMEOUT` (seconds, 0 < t <= 3600)
vault key           `--key-file`, else `MCP_TOKEN_BROKER_KEY_FILE`, else the OS
                    keyring
socket path         `MCP_TOKEN_BROKER_SOCKET`, else `broker.client.socketpath`
==================  ===========================================================

Importing this module is cheap: the heavy modules (httpx, keyring,
cryptography) load inside the functions, so the CLI's `--help` and the
desktop app's first paint never wait for them. The app calls `build_service`
on its worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .driver.engine import Engine
    from .driver.transport import Limits
    from .service.grants import Policy
    from .service.service import BrokerService
    from .storage.config import Config
    from .storage.keystore import KeyStore
    from .storage.paths import Paths
    from .storage.store import Store

__all__ = [
    "HTTP_TIMEOUT_ENV",
    "KEY_FILE_ENV",
    "Setup",
    "build_engine",
    "build_service",
    "build_store",
    "http_limits",
    "keystore_factory",
    "resolve",
]

#: Seconds one HTTP exchange may take in all (default 30).
HTTP_TIMEOUT_ENV = "MCP_TOKEN_BROKER_HTTP_TIMEOUT"
#: A 0600 file holding the vault key, instead of the OS keyring.
KEY_FILE_ENV = "MCP_TOKEN_BROKER_KEY_FILE"


@dataclass(frozen=True)
class Setup:
    """Every setting an entry point needs, resolved once."""

    paths: Paths
    config: Config
    #: The client policy in force: the command line's, else the config's.
    policy: Policy
    #: The vault key file, or None for the OS keyring.
    key_file: Path | None
    limits: Limits
    socket_path: str
    #: Where `broker.client.socketdir` starts checking the socket's directories.
    socket_base: str

    @property
    def refresh_margin(self) -> int:
        return self.config.refresh_margin


def http_limits() -> Limits:
    """The transport limits, from `MCP_TOKEN_BROKER_HTTP_TIMEOUT` if set."""
    from .driver.transport import Limits

    value = os.environ.get(HTTP_TIMEOUT_ENV)
    if not value:
        return Limits()
    try:
        seconds = float(value)
        if not 0 < seconds <= 3600:
            raise ValueError
    except ValueError:
        from .errors import UsageError

        raise UsageError(f"{HTTP_TIMEOUT_ENV} must be a number of seconds between 0 and 3600") from None
    return Limits(timeout=min(seconds, Limits.timeout), deadline=seconds)


def keystore_factory(key_file: Path | None) -> Callable[[], KeyStore]:
    """What opens the vault key, when the store first needs it."""

    def keystore() -> KeyStore:
        if key_file is not None:
            from .storage.keystore import FileKeyStore

            return FileKeyStore(key_file)
        from .storage.keystore import KeyringKeyStore

        return KeyringKeyStore()

    return keystore


def resolve(
    *,
    key_file: str | None = None,
    policy: str | None = None,
    default_policy: str = "allow",
    paths: Paths | None = None,
    read_config: bool = True,
) -> Setup:
    """Read the config file and the environment; `key_file` and `policy` are
    the command line's (None: not given). Raises `SettingsCorrupt` for a
    damaged config file and `UsageError` for a bad environment value.
    `read_config=False` takes the defaults instead: for the CLI's direct
    path, which neither serves nor refreshes."""
    from .client.socketpath import socket_location
    from .storage.config import Config, load_config
    from .storage.paths import Paths

    paths = paths or Paths.default()
    config = load_config(paths, default_policy=default_policy) if read_config else Config(client_policy=default_policy)
    socket_path, socket_base = socket_location()
    key = key_file or os.environ.get(KEY_FILE_ENV)
    return Setup(
        paths=paths,
        config=config,
        policy=(policy or config.client_policy),  # type: ignore[arg-type]  # checked by load_config/argparse and the service
        key_file=Path(key) if key else None,
        limits=http_limits(),
        socket_path=socket_path,
        socket_base=socket_base,
    )


def build_store(setup: Setup) -> Store:
    from .storage.store import Store

    return Store(setup.paths, keystore_factory(setup.key_file))


def build_engine(
    setup: Setup,
    *,
    store: Store | None = None,
    flow_timeout: float | None = None,
    opener: Callable[[str], bool] | None = None,
) -> Engine:
    """An engine with its own transport; the caller closes `engine.transport`."""
    from .driver.browser import open_browser
    from .driver.engine import DEFAULT_FLOW_TIMEOUT, Engine
    from .driver.transport import Transport

    return Engine(
        store or build_store(setup),
        Transport(limits=setup.limits),
        opener=opener or open_browser,
        flow_timeout=DEFAULT_FLOW_TIMEOUT if flow_timeout is None else flow_timeout,
    )


def build_service(
    setup: Setup,
    *,
    approval_timeout: float = 60.0,
    max_proxy_sessions: int | None = None,
    ui: bool = False,
    engine: Engine | None = None,
) -> BrokerService:
    """The service with the setup's policy, refresh margin and socket path
    (`max_proxy_sessions` None: `proxy_session.MAX_SESSIONS`)."""
    from .service.service import BrokerService

    engine = engine or build_engine(setup)
    return BrokerService(
        paths=setup.paths,
        store=engine.store,
        engine=engine,
        socket_path=setup.socket_path,
        policy=setup.policy,
        approval_timeout=approval_timeout,
        max_proxy_sessions=max_proxy_sessions,
        min_margin=setup.refresh_margin,
        ui=ui,
    )
