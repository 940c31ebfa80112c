"""Every error the broker raises on purpose.

One tree, split by whose fault it is, so that callers (the CLI, later the
socket API and the GUI) can decide what to tell the user:

    BrokerError
    ├── UsageError                  the user asked for something impossible
    │   ├── InvalidName
    │   ├── InvalidURL
    │   ├── UnknownConnection
    │   ├── ConnectionExists
    │   └── NotConnected
    ├── StorageError                local state cannot be read or written
    │   ├── KeyringUnavailable
    │   ├── KeyFileError
    │   ├── VaultCorrupt
    │   ├── SettingsCorrupt
    │   ├── SettingsMismatch        connections.json disagrees with the vault about where secrets go
    │   ├── VaultKeyMismatch
    │   ├── VaultLocked
    │   ├── SchemaTooNew
    │   ├── UnsafeSocketDir         a directory on the socket's path is not private to you
    │   ├── SocketPathTooLong
    │   └── UntrustedListener       the socket's listener runs as another user
    ├── FlowError                   the interactive login did not complete
    │   ├── FlowTimeout
    │   ├── FlowCancelled
    │   ├── RedirectPortUnavailable
    │   └── BrowserRefused
    └── RemoteError                 a server misbehaved or said no
        ├── NetworkError
        ├── ResponseTooLarge
        ├── BadResponse
        ├── UnsafeEndpoint
        ├── DiscoveryError
        │   ├── IssuerMismatch
        │   ├── ResourceMismatch
        │   └── PKCEUnsupported
        ├── CallbackRejected        forged or mixed-up authorization response
        │   ├── StateMismatch
        │   └── IssuerMismatchInCallback
        ├── RegistrationError
        └── OAuthError              a standard `error=` code from the server
            ├── AccessDenied
            ├── InvalidGrant
            └── InvalidClient

Messages are written for the person at the terminal. They never contain a
token, a client secret or a code verifier: values that come from a server are
shortened and stripped of control characters by `describe_remote_text`.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "UsageError",
    "InvalidName",
    "InvalidURL",
    "UnknownConnection",
    "ConnectionExists",
    "NotConnected",
    "StorageError",
    "KeyringUnavailable",
    "KeyFileError",
    "VaultCorrupt",
    "SettingsCorrupt",
    "SettingsMismatch",
    "VaultKeyMismatch",
    "VaultLocked",
    "SchemaTooNew",
    "UnsafeSocketDir",
    "SocketPathTooLong",
    "UntrustedListener",
    "FlowError",
    "FlowTimeout",
    "FlowCancelled",
    "RedirectPortUnavailable",
    "BrowserRefused",
    "RemoteError",
    "NetworkError",
    "ResponseTooLarge",
    "BadResponse",
    "UnsafeEndpoint",
    "DiscoveryError",
    "IssuerMismatch",
    "ResourceMismatch",
    "PKCEUnsupported",
    "CallbackRejected",
    "StateMismatch",
    "IssuerMismatchInCallback",
    "RegistrationError",
    "OAuthError",
    "AccessDenied",
    "InvalidGrant",
    "InvalidClient",
    "oauth_error",
    "describe_remote_text",
]

_MAX_REMOTE_TEXT = 200


def describe_remote_text(value: object, limit: int = _MAX_REMOTE_TEXT) -> str:
    """Make text that a server sent safe to show in one terminal line."""
    text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


class BrokerError(Exception):
    """Base of every error the broker raises deliberately."""

    #: Process exit status the CLI uses for this kind of error.
    exit_code = 1


class UsageError(BrokerError):
    exit_code = 2


class InvalidName(UsageError):
    pass


class InvalidURL(UsageError):
    pass


class UnknownConnection(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no connection named {name!r}; `mcp-token-broker list` shows them")
        self.name = name


class ConnectionExists(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a connection named {name!r} already exists; remove it first or pick another name")
        self.name = name


class NotConnected(UsageError):
    def __init__(self, name: str, reason: str = "has no tokens") -> None:
        super().__init__(f"connection {name!r} {reason}; run `mcp-token-broker connect {name}`")
        self.name = name


class StorageError(BrokerError):
    exit_code = 3


class KeyringUnavailable(StorageError):
    pass


class KeyFileError(StorageError):
    pass


class VaultCorrupt(StorageError):
    pass


class SettingsCorrupt(StorageError):
    pass


class SettingsMismatch(StorageError):
    """The connections file no longer says what the vault's record was bound
    to (or the record predates bindings): nothing was sent anywhere."""

    def __init__(self, message: str, name: str, why: str) -> None:
        super().__init__(message)
        self.name = name
        #: What disagrees, in words (no secret: endpoints and URLs only).
        self.why = why


class VaultKeyMismatch(StorageError):
    pass


class VaultLocked(StorageError):
    pass


class SchemaTooNew(StorageError):
    pass


class UnsafeSocketDir(StorageError):
    """Another user could replace the socket (see broker.socketdir)."""


class SocketPathTooLong(StorageError):
    pass


class UntrustedListener(StorageError):
    """Whoever listens on the socket is not us: nothing was sent to it."""


class FlowError(BrokerError):
    exit_code = 4


class FlowTimeout(FlowError):
    pass


class FlowCancelled(FlowError):
    pass


class RedirectPortUnavailable(FlowError):
    pass


class BrowserRefused(FlowError):
    pass


class RemoteError(BrokerError):
    exit_code = 5


class NetworkError(RemoteError):
    pass


class ResponseTooLarge(RemoteError):
    pass


class BadResponse(RemoteError):
    pass


class UnsafeEndpoint(RemoteError):
    pass


class DiscoveryError(RemoteError):
    pass


class IssuerMismatch(DiscoveryError):
    pass


class ResourceMismatch(DiscoveryError):
    pass


class PKCEUnsupported(DiscoveryError):
    pass


class CallbackRejected(RemoteError):
    pass


class StateMismatch(CallbackRejected):
    pass


class IssuerMismatchInCallback(CallbackRejected):
    pass


class RegistrationError(RemoteError):
    pass


class OAuthError(RemoteError):
    """A server answered with an RFC 6749 `error` code."""

    def __init__(self, error: str, description: str | None = None, *, where: str = "authorization server") -> None:
        self.error = describe_remote_text(error, 64)
        self.description = describe_remote_text(description) if description else None
        self.where = where
        message = f"{where} refused: {self.error}"
        if self.description:
            message += f" ({self.description})"
        super().__init__(message)


class AccessDenied(OAuthError):
    pass


class InvalidGrant(OAuthError):
    pass


class InvalidClient(OAuthError):
    pass


_OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    "access_denied": AccessDenied,
    "invalid_grant": InvalidGrant,
    "invalid_client": InvalidClient,
    "unauthorized_client": InvalidClient,
}


def oauth_error(error: str, description: str | None = None, *, where: str = "authorization server") -> OAuthError:
    """Build the most specific `OAuthError` subclass for an `error` code."""
    cls = _OAUTH_ERRORS.get(error, OAuthError)
    return cls(error, description, where=where)
