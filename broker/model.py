"""What the broker knows about a connection, split by sensitivity.

`ConnectionSettings` is non-secret and lives in the human-readable
connections file. `ConnectionState` holds the registration and tokens and
lives, encrypted, in the vault.

Anything that can write the connections file could redirect secrets by
editing it, so the vault record keeps its own `Binding`: where this
connection's refresh token, client secret and access token may go. The
record's associated data names the connection, so the binding cannot be
swapped in from another record either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from .errors import InvalidName, SettingsMismatch, describe_remote_text
from .oauth.discovery import AuthServerMetadata
from .oauth.registration import ClientRegistration
from .oauth.tokens import TokenSet
from .status import Status
from .stepup import StepUp

__all__ = [
    "NAME_RE",
    "check_name",
    "Status",
    "ConnectionView",
    "ConnectionSettings",
    "Discovered",
    "Binding",
    "ConnectionState",
    "binding_mismatch",
    "check_binding",
    "status_of",
    "public_view",
    "orphan_view",
    "orphan_note",
]

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"{name!r} is not a valid connection name: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Discovered:
    """What discovery found; refreshed on every `connect`."""

    issuer: str
    resource: str
    scopes: tuple[str, ...]
    scopes_offered: tuple[str, ...] | None
    registration_method: str
    resource_metadata_url: str | None
    auth_server: AuthServerMetadata

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "resource": self.resource,
            "scopes": list(self.scopes),
            "scopes_offered": list(self.scopes_offered) if self.scopes_offered is not None else None,
            "registration_method": self.registration_method,
            "resource_metadata_url": self.resource_metadata_url,
            "auth_server": self.auth_server.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Discovered:
        offered = data.get("scopes_offered")
        return cls(
            issuer=data["issuer"],
            resource=data["resource"],
            scopes=tuple(data.get("scopes") or ()),
            scopes_offered=tuple(offered) if offered is not None else None,
            registration_method=data["registration_method"],
            resource_metadata_url=data.get("resource_metadata_url"),
            auth_server=AuthServerMetadata.from_json(data["auth_server"]),
        )


@dataclass(frozen=True)
class ConnectionSettings:
    name: str
    server_url: str
    #: Scopes the user asked for with --scope; empty means "as the server suggests".
    scopes: tuple[str, ...] = ()
    client_id: str | None = None
    client_metadata_url: str | None = None
    #: A fixed redirect port (pre-registered clients that demand one); None = ephemeral.
    redirect_port: int | None = None
    redirect_path: str = "/callback"
    #: Send the RFC 8707 `resource` parameter (off only for servers that reject it).
    use_resource: bool = True
    added_at: int = 0
    discovered: Discovered | None = None
    #: A server asked for more scope (`broker.stepup`); None when it never did.
    step_up: StepUp | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "scopes": list(self.scopes),
            "client_id": self.client_id,
            "client_metadata_url": self.client_metadata_url,
            "redirect_port": self.redirect_port,
            "redirect_path": self.redirect_path,
            "use_resource": self.use_resource,
            "added_at": self.added_at,
            "discovered": self.discovered.to_json() if self.discovered else None,
            "step_up": self.step_up.to_json() if self.step_up else None,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ConnectionSettings:
        disc = data.get("discovered")
        step_up = data.get("step_up")
        return cls(
            name=name,
            server_url=data["server_url"],
            scopes=tuple(data.get("scopes") or ()),
            client_id=data.get("client_id"),
            client_metadata_url=data.get("client_metadata_url"),
            redirect_port=data.get("redirect_port"),
            redirect_path=data.get("redirect_path") or "/callback",
            use_resource=bool(data.get("use_resource", True)),
            added_at=int(data.get("added_at") or 0),
            discovered=Discovered.from_json(disc) if disc else None,
            step_up=StepUp.from_json(step_up) if isinstance(step_up, dict) else None,
        )


@dataclass(frozen=True)
class Binding:
    """Where a connection's secrets may be sent, as of the last `connect` (or
    `add` with a client secret). Kept in the vault, never read from the
    connections file: refresh and revocation use these, and a connections file
    that disagrees stops the connection instead of redirecting its secrets.
    The registration endpoint is not here: `connect` registers with what it
    discovers afresh, and registering sends no secret."""

    server_url: str
    issuer: str
    resource: str
    token_endpoint: str
    revocation_endpoint: str | None

    @classmethod
    def of(cls, server_url: str, discovered: Discovered) -> Binding:
        return cls(
            server_url=server_url,
            issuer=discovered.issuer,
            resource=discovered.resource,
            token_endpoint=discovered.auth_server.token_endpoint,
            revocation_endpoint=discovered.auth_server.revocation_endpoint,
        )

    def endpoints(self) -> AuthServerMetadata:
        """The authorization server as far as sending secrets goes: the
        vault's token and revocation endpoints, nothing from the settings."""
        return AuthServerMetadata(
            issuer=self.issuer,
            authorization_endpoint="",
            token_endpoint=self.token_endpoint,
            registration_endpoint=None,
            revocation_endpoint=self.revocation_endpoint,
            scopes_supported=None,
            code_challenge_methods_supported=(),
            token_endpoint_auth_methods_supported=None,
            grant_types_supported=None,
            iss_parameter_supported=False,
            client_id_metadata_document_supported=False,
            source="oauth",
            url="",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "issuer": self.issuer,
            "resource": self.resource,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Binding:
        return cls(
            server_url=data["server_url"],
            issuer=data["issuer"],
            resource=data["resource"],
            token_endpoint=data["token_endpoint"],
            revocation_endpoint=data.get("revocation_endpoint"),
        )


@dataclass(frozen=True)
class ConnectionState:
    """The vault record of one connection."""

    registration: ClientRegistration | None = None
    tokens: TokenSet | None = field(default=None, repr=False)
    #: The scopes asked for in the last authorization, to compare with the grant.
    requested_scope: tuple[str, ...] = ()
    reauth_required: bool = False
    last_refresh_at: int | None = None
    last_error: str | None = None
    #: A pre-registered client's secret, kept even while no registration is bound.
    client_secret: str | None = field(default=None, repr=False)
    #: Whether a refresh has shown the server rotating refresh tokens (None: no refresh yet).
    rotation_seen: bool | None = None
    #: Where the secrets may go (None: a record from before bindings existed).
    binding: Binding | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "registration": self.registration.to_json() if self.registration else None,
            "tokens": self.tokens.to_json() if self.tokens else None,
            "requested_scope": list(self.requested_scope),
            "reauth_required": self.reauth_required,
            "last_refresh_at": self.last_refresh_at,
            "last_error": self.last_error,
            "client_secret": self.client_secret,
            "rotation_seen": self.rotation_seen,
            "binding": self.binding.to_json() if self.binding else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConnectionState:
        reg = data.get("registration")
        tok = data.get("tokens")
        bound = data.get("binding")
        return cls(
            registration=ClientRegistration.from_json(reg) if reg else None,
            tokens=TokenSet.from_json(tok) if tok else None,
            requested_scope=tuple(data.get("requested_scope") or ()),
            reauth_required=bool(data.get("reauth_required")),
            last_refresh_at=data.get("last_refresh_at"),
            last_error=data.get("last_error"),
            client_secret=data.get("client_secret"),
            rotation_seen=data.get("rotation_seen"),
            binding=Binding.from_json(bound) if bound else None,
        )

    def forget_tokens(self) -> ConnectionState:
        return replace(self, tokens=None, reauth_required=False, last_error=None)


def binding_mismatch(settings: ConnectionSettings, binding: Binding) -> str | None:
    """How the connections file disagrees with the vault's binding, in words
    for the user; None when it agrees. The values come from a file an attacker
    may have written, so they are shortened and stripped of control characters."""
    d = settings.discovered
    if d is None:
        return "the discovered authorization server is missing"
    for what, bound, now in (
        ("the server URL", binding.server_url, settings.server_url),
        ("the issuer", binding.issuer, d.issuer),
        ("the resource", binding.resource, d.resource),
        ("the token endpoint", binding.token_endpoint, d.auth_server.token_endpoint),
        ("the revocation endpoint", binding.revocation_endpoint, d.auth_server.revocation_endpoint),
    ):
        if bound != now:
            return f"{what} changed from {describe_remote_text(bound)} to {describe_remote_text(now)}"
    return None


def check_binding(settings: ConnectionSettings, state: ConnectionState) -> Binding:
    """The vault's binding, if the connections file still agrees with it;
    otherwise `SettingsMismatch` with one line for the user. Call before any
    secret leaves: a refresh, a revocation, a token handed to a client."""
    name = settings.name
    bound = state.binding
    if bound is None:
        why = (
            f"the vault record of {name} was written by an older mcp-token-broker and does not record where "
            "its secrets may be sent, so none were sent"
        )
    else:
        changed = binding_mismatch(settings, bound)
        if changed is None:
            return bound
        why = f"connections.json no longer matches the vault for {name}: {changed}"
    raise SettingsMismatch(f"{why}; run `mcp-token-broker connect {name}` to log in again", name, why)


def status_of(state: ConnectionState | None, now: float) -> Status:
    if state is None or state.tokens is None:
        return Status.NOT_CONNECTED
    if state.reauth_required:
        return Status.REAUTH_REQUIRED
    if state.tokens.expires_at is not None and now >= state.tokens.expires_at:
        return Status.EXPIRED
    return Status.CONNECTED


class ConnectionView(TypedDict):
    """One connection as the socket API lists it (docs/socket-api.md), the CLI
    prints it and the app's table shows it (`ui.rows.RowState.from_view`).
    Never a secret. The full view (`show`) adds more keys."""

    name: str
    server_url: str
    status: Status
    scopes: list[str]
    #: Unix time; None when the server gave no expiry or nothing is held.
    expires_at: int | None
    #: A server asked for more scope: `{"scopes", "missing", "attempts", "pending", "given_up", "tries",
    #: "refused", "held", "before", "request"}` (`broker.stepup.StepUp.to_json`, plus the scopes the next
    #: login asks for).
    step_up: dict[str, Any] | None


def public_view(settings: ConnectionSettings, state: ConnectionState | None, now: float) -> ConnectionView:
    """The socket-API shape of a connection: never a secret."""
    tokens = state.tokens if state else None
    return {
        "name": settings.name,
        "server_url": settings.server_url,
        "status": status_of(state, now),
        "scopes": list(tokens.scope) if tokens else [],
        "expires_at": tokens.expires_at if tokens else None,
        "step_up": _step_up_view(settings),
    }


def _step_up_view(settings: ConnectionSettings) -> dict[str, Any] | None:
    step_up = settings.step_up
    if step_up is None or not (step_up.pending or step_up.given_up):
        return None
    # `request`: what the next login asks for (settings.scopes: the union while pending, `before` once given up).
    return {**step_up.to_json(), "request": list(settings.scopes)}


def orphan_note(name: str) -> str:
    return (
        "orphaned: a vault record without settings; restore connections.json or "
        f"`mcp-token-broker remove {name}` to delete it"
    )


def orphan_view(name: str, state: ConnectionState, now: float) -> dict[str, Any]:
    """A vault record whose name is missing from the connections file. It is
    kept (a lost or edited settings file must never wipe tokens) and shown,
    with what the vault itself knows; never a secret."""
    tokens = state.tokens
    bound = state.binding
    return {
        "name": name,
        "server_url": bound.server_url if bound else None,
        "status": "orphaned",
        "scopes": list(tokens.scope) if tokens else [],
        "expires_at": tokens.expires_at if tokens else None,
        "issuer": bound.issuer if bound else (state.registration.issuer if state.registration else None),
        "has_refresh_token": bool(tokens and tokens.refresh_token),
        "message": orphan_note(name),
    }
