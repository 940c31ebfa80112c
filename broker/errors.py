"""Every error the broker raises on purpose.

One tree, split by whose fault it is, so that callers (the CLI, the socket
API, the GUI) can decide what to tell the user. Each class has a `code`, the
API's `error` string: `broker.codes` maps it to the HTTP status the API
answers with and to the exit status (`exit_code`) the CLI ends with.

    BrokerError                     error
    ├── UsageError                  bad_request             the user asked for something impossible
    │   ├── InvalidName
    │   ├── InvalidURL
    │   ├── UnknownConnection       unknown_connection
    │   ├── ConnectionExists
    │   ├── DeviceLoginUnsupported  `connect --device` where the server offers no device login
    │   └── ImportRefused           an import that would lose or mix up the user's data
    ├── AuthorizationRequired       authorization_required  the connection needs `connect` (again)
    │   └── NotConnected
    ├── ClientRefused               access_denied           this client may not have the token
    │   ├── AnswerRefused           answer_refused          an approval answer that is not accepted
    │   └── IdentityChanged         identity_changed        the peer exec'd or exited since it connected
    ├── ApprovalTimeout             approval_timeout        nobody answered the `ask` policy's question in time
    ├── StorageError                storage_error           local state cannot be read or written
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
    │   ├── UntrustedListener       the socket's listener runs as another user
    │   ├── ClientConfigUnreadable  an MCP client's config file `import` cannot read
    │   └── ClientConfigChanged     that file changed between `import` reading and rewriting it
    ├── FlowError                   flow_error              the interactive login did not complete
    │   ├── FlowTimeout
    │   │   └── DeviceCodeExpired   the device login's code ran out (RFC 8628 expired_token)
    │   ├── FlowCancelled
    │   ├── RedirectPortUnavailable
    │   └── BrowserRefused
    ├── RemoteError                 remote_error            a server misbehaved or said no
    │   ├── NetworkError
    │   ├── ResponseTooLarge
    │   ├── BadResponse
    │   ├── UnsafeEndpoint
    │   ├── DiscoveryError
    │   │   ├── IssuerMismatch
    │   │   ├── ResourceMismatch
    │   │   └── PKCEUnsupported
    │   ├── CallbackRejected        forged or mixed-up authorization response
    │   │   ├── StateMismatch
    │   │   └── IssuerMismatchInCallback
    │   ├── RegistrationError
    │   ├── RefreshError            refresh_failed          no fresh token, and the held one is too close to expiry
    │   ├── ProbeFailed             the MCP server failed `test` (kind: unreachable, server_error, ...)
    │   └── OAuthError              a standard `error=` code from the server
    │       ├── AccessDenied
    │       ├── InvalidGrant
    │       └── InvalidClient
    ├── AlreadyRunning              already_running         another service holds the socket
    ├── TooManySessions             too_many_sessions       the broker hosts as many proxy sessions as it may
    ├── ApiError                    (its own code)          a socket API request for nothing there:
    │                                                       not_found, method_not_allowed, unknown_flow,
    │                                                       unknown_grant, unknown_approval, no_ui
    ├── ServiceUnavailable          no_service              (client side) no service answers on the socket
    └── ServiceError                (the answer's code)     (client side) the service answered with an error

Besides private control-flow signals that never leave their module (their
names start with `_`), only two exceptions live elsewhere, on purpose: `broker.client.wire`'s `Unavailable`
and `BadAnswer`. The stdlib-only `token` path must not load this module on
success, so the wire raises plain exceptions, which `broker.client.api_client` turns
into `ServiceUnavailable` and `ServiceError` and the fast path into exit
statuses from `broker.codes`; they never reach anyone else.

Messages are written for the person at the terminal. They never contain a
token, a client secret or a code verifier: values that come from a server are
shortened and stripped of control characters by `describe_remote_text`.
"""

from __future__ import annotations

from .codes import exit_for

__all__ = [
    "AccessDenied",
    "AlreadyRunning",
    "AnswerRefused",
    "ApiError",
    "ApprovalTimeout",
    "AuthorizationRequired",
    "BadResponse",
    "BrokerError",
    "BrowserRefused",
    "CallbackRejected",
    "ClientRefused",
    "ConnectionExists",
    "DeviceCodeExpired",
    "DeviceLoginUnsupported",
    "DiscoveryError",
    "FlowCancelled",
    "FlowError",
    "FlowTimeout",
    "IdentityChanged",
    "InvalidClient",
    "InvalidGrant",
    "InvalidName",
    "InvalidURL",
    "IssuerMismatch",
    "IssuerMismatchInCallback",
    "KeyFileError",
    "KeyringUnavailable",
    "NetworkError",
    "NotConnected",
    "OAuthError",
    "PKCEUnsupported",
    "ProbeFailed",
    "RedirectPortUnavailable",
    "RefreshError",
    "RegistrationError",
    "RemoteError",
    "ResourceMismatch",
    "ResponseTooLarge",
    "SchemaTooNew",
    "ServiceError",
    "ServiceUnavailable",
    "SettingsCorrupt",
    "SettingsMismatch",
    "SocketPathTooLong",
    "StateMismatch",
    "StorageError",
    "TooManySessions",
    "UnknownConnection",
    "UnsafeEndpoint",
    "UnsafeSocketDir",
    "UntrustedListener",
    "ClientConfigUnreadable",
    "ClientConfigChanged",
    "ImportRefused",
    "UsageError",
    "VaultCorrupt",
    "VaultKeyMismatch",
    "VaultLocked",
    "describe_remote_text",
    "oauth_error",
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

    #: The API's `error` code for this kind of error (a key of `broker.codes.CODES`).
    code: str = "error"

    @property
    def exit_code(self) -> int:
        """Process exit status the CLI uses for this error (from `broker.codes`)."""
        return exit_for(self.code)


class UsageError(BrokerError):
    code = "bad_request"


class InvalidName(UsageError):
    pass


class InvalidURL(UsageError):
    pass


class UnknownConnection(UsageError):
    code = "unknown_connection"

    def __init__(self, name: str) -> None:
        super().__init__(f"no connection named {name!r}; `mcp-token-broker list` shows them")
        self.name = name


class ConnectionExists(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a connection named {name!r} already exists; remove it first or pick another name")
        self.name = name


class AuthorizationRequired(BrokerError):
    """No token can be served until the user runs `connect` (again)."""

    code = "authorization_required"


class NotConnected(AuthorizationRequired):
    def __init__(self, name: str, reason: str = "has no tokens") -> None:
        super().__init__(f"connection {name!r} {reason}; run `mcp-token-broker connect {name}`")
        self.name = name


class ClientRefused(BrokerError):
    """This client may not have the token: the policy or a grant says no."""

    code = "access_denied"


class AnswerRefused(ClientRefused):
    """An answer to an approval that is not accepted (see `BrokerService.answer_approval`)."""

    code = "answer_refused"


class IdentityChanged(ClientRefused):
    """The process on a socket connection exec'd or exited since it connected."""

    code = "identity_changed"


class ApprovalTimeout(BrokerError):
    """Nobody answered the `ask` policy's question in time. Not a refusal:
    no grant is stored, and asking again asks the person again."""

    code = "approval_timeout"


class StorageError(BrokerError):
    code = "storage_error"


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
    """Another user could replace the socket (see broker.client.socketdir)."""


class SocketPathTooLong(StorageError):
    pass


class UntrustedListener(StorageError):
    """Whoever listens on the socket is not us: nothing was sent to it."""


class ClientConfigUnreadable(StorageError):
    """An MCP client's config file is not what its client documents (see broker.importing)."""


class ClientConfigChanged(StorageError):
    """The client's config file changed after `import` read it: nothing was written."""


class DeviceLoginUnsupported(UsageError):
    pass


class ImportRefused(UsageError):
    """`import` will not do this as asked (one line says why and what to do)."""


class FlowError(BrokerError):
    code = "flow_error"


class FlowTimeout(FlowError):
    pass


class DeviceCodeExpired(FlowTimeout):
    pass


class FlowCancelled(FlowError):
    pass


class RedirectPortUnavailable(FlowError):
    pass


class BrowserRefused(FlowError):
    pass


class RemoteError(BrokerError):
    code = "remote_error"


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


class RefreshError(RemoteError):
    """A refresh failed (the network, a 5xx) and the token held is too close to expiry to serve."""

    code = "refresh_failed"


class ProbeFailed(RemoteError):
    """`test NAME` (MCP initialize and tools/list) failed at the server's end.
    `kind` says how, for `--json`: unreachable, timeout, unauthorized,
    insufficient_scope (with `scope` when the server named it), forbidden,
    server_error (with `status`), not_mcp or mcp_error."""

    def __init__(
        self, kind: str, message: str, *, status: int | None = None, scope: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.scope = scope


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


class AlreadyRunning(BrokerError):
    """Another broker service already serves (or holds the lock of) the socket."""

    code = "already_running"


class TooManySessions(BrokerError):
    """A proxy session past `serve --max-proxy-sessions`: refused before its 101.
    The thin proxy answers every request with it and never asks again, so its
    client must restart it once a place is free."""

    code = "too_many_sessions"

    def __init__(self, limit: int) -> None:
        sessions = "session" if limit == 1 else "sessions"
        super().__init__(
            f"the broker already runs {limit} proxy {sessions}, its limit; "
            "close some MCP clients, then restart this one"
        )
        self.limit = limit


class ApiError(BrokerError):
    """A socket API request for something that is not there (an endpoint, a
    method, a flow, a grant, an approval, a window): `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # a key of broker.codes.CODES (tests/test_errors.py checks every use)


class ServiceUnavailable(BrokerError):
    """No broker service answers on the socket (client side)."""

    code = "no_service"


class ServiceError(BrokerError):
    """The service answered with an error (client side): `code` is the API's
    error code, `status` the HTTP status (0: no error answer: none came, or a
    login flow ended with this error)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
