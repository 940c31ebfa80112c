"""Where the vault's master key lives: the OS keyring, or an opted-in key file.

There is no silent fallback. Without a usable keyring the broker refuses and
names the two fixes; the key file is used only when the user asks for it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import KeyFileError, KeyringUnavailable

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

__all__ = ["KeyStore", "KeyringKeyStore", "FileKeyStore", "KEY_FILE_ENV", "NO_KEYRING_HELP", "SECRET_STORES"]

log = logging.getLogger(__name__)

KEY_FILE_ENV = "MCP_TOKEN_BROKER_KEY_FILE"
SERVICE = "mcp-token-broker"
NO_KEYRING_HELP = (
    "Start a Secret Service (GNOME Keyring, KWallet or KeePassXC) in your desktop session and unlock it, "
    f"or opt in to a key file with --key-file PATH or {KEY_FILE_ENV}=PATH "
    "(anyone who can read that file can decrypt your tokens)"
)
_KEY_FILE_PREFIX = "mcp-token-broker-key-v1:"


class KeyStore(Protocol):
    #: Words for messages: "the OS keyring (SecretService Keyring)".
    description: str

    def get(self, vault_id: str) -> bytes | None: ...

    def put(self, vault_id: str, key: bytes) -> None: ...


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{where} does not hold a 256-bit vault key")
    return key


class KeyringKeyStore:
    """The key in the OS keyring via `keyring`, one entry per vault id."""

    def __init__(self, backend: object | None = None) -> None:
        import keyring
        import keyring.errors

        self._errors = keyring.errors
        self._backend = _secret_store(backend if backend is not None else keyring.get_keyring())
        name = type(self._backend).__module__
        self.description = f"the OS keyring ({getattr(self._backend, 'name', name)})"

    def _username(self, vault_id: str) -> str:
        return f"vault-master-key:{vault_id}"

    def get(self, vault_id: str) -> bytes | None:
        try:
            value = self._backend.get_password(SERVICE, self._username(vault_id))
        except self._errors.KeyringError as exc:
            raise KeyringUnavailable(
                f"the OS keyring did not answer ({type(exc).__name__}). {NO_KEYRING_HELP}"
            ) from None
        if value is None:
            return None
        try:
            return _decode_key(value, "the keyring entry")
        except KeyFileError as exc:
            raise KeyringUnavailable(str(exc)) from None

    def put(self, vault_id: str, key: bytes) -> None:
        try:
            self._backend.set_password(SERVICE, self._username(vault_id), base64.b64encode(key).decode())
        except self._errors.KeyringError as exc:
            raise KeyringUnavailable(
                f"the OS keyring refused to store the vault key ({type(exc).__name__}). {NO_KEYRING_HELP}"
            ) from None


#: Backends that keep secrets in an OS secret store (encrypted, unlocked with
#: the user's session). Anything else, such as `keyrings.alt`'s plaintext or
#: "encrypted" files, would put the vault key beside the vault.
SECRET_STORES = (
    "keyring.backends.SecretService",
    "keyring.backends.libsecret",
    "keyring.backends.kwallet",
    "keyring.backends.macOS",
    "keyring.backends.Windows",
)


def _backend_name(backend: object) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_secret_store(backend: object) -> bool:
    module = type(backend).__module__
    priority = getattr(backend, "priority", 1)
    usable = not isinstance(priority, (int, float)) or priority > 0
    return usable and any(module == m or module.startswith(m + ".") for m in SECRET_STORES)


def _secret_store(backend: object) -> KeyringBackend:
    """`backend` itself if it is a real secret store; for keyring's chainer, its
    highest-priority member that is one (the chainer would otherwise read
    from, and fall back to writing into, every member, plaintext ones too)."""
    from keyring.backend import KeyringBackend
    from keyring.backends.chainer import ChainerBackend

    module = type(backend).__module__
    if module.startswith(("keyring.backends.fail", "keyring.backends.null")):
        raise KeyringUnavailable(f"no OS keyring is available to hold the vault key. {NO_KEYRING_HELP}")
    if isinstance(backend, ChainerBackend):
        members = list(getattr(backend, "backends", ()))
        real = [m for m in members if isinstance(m, KeyringBackend) and _is_secret_store(m)]
        if real:
            return real[0]
        if not members:
            raise KeyringUnavailable(f"no OS keyring is available to hold the vault key. {NO_KEYRING_HELP}")
        backend = members[0]
    if not isinstance(backend, KeyringBackend) or not _is_secret_store(backend):
        raise KeyringUnavailable(
            f"no OS keyring is available to hold the vault key (the keyring backend {_backend_name(backend)} "
            f"is not an OS secret store and may keep it in a plain file). {NO_KEYRING_HELP}"
        )
    return backend


class FileKeyStore:
    """The key in a 0600 file the user chose. Refuses group/world-readable files."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self.description = f"the key file {self.path}"

    def _check(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{self.path} is not a regular file")
        if st.st_uid != os.getuid():
            raise KeyFileError(f"{self.path} belongs to another user")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {self.path}`"
            )

    def get(self, vault_id: str) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyFileError(f"cannot read {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "r") as f:
            self._check(os.fstat(f.fileno()))
            text = f.read(256)
        if not text.startswith(_KEY_FILE_PREFIX):
            raise KeyFileError(f"{self.path} is not an mcp-token-broker key file")
        return _decode_key(text[len(_KEY_FILE_PREFIX) :], str(self.path))

    def put(self, vault_id: str, key: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{self.path} already exists and holds another key; refusing to overwrite it") from None
        with os.fdopen(fd, "w") as f:
            f.write(_KEY_FILE_PREFIX + base64.b64encode(key).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.warning("vault key stored in %s; protect that file like the tokens themselves", self.path)
