"""What the broker knows about a connection, split by sensitivity.

`ConnectionSettings` is non-secret and lives in the human-readable
connections file. `ConnectionState` holds the registration and tokens and
lives, encrypted, in the vault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .discovery import AuthServerMetadata
from .errors import InvalidName
from .registration import ClientRegistration
from .tokens import TokenSet

__all__ = [
    "NAME_RE",
    "check_name",
    "Status",
    "ConnectionSettings",
    "Discovered",
    "ConnectionState",
    "status_of",
    "public_view",
]

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
Status = Literal["not_connected", "connected", "expired", "reauth_required"]


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
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ConnectionSettings:
        disc = data.get("discovered")
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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConnectionState:
        reg = data.get("registration")
        tok = data.get("tokens")
        return cls(
            registration=ClientRegistration.from_json(reg) if reg else None,
            tokens=TokenSet.from_json(tok) if tok else None,
            requested_scope=tuple(data.get("requested_scope") or ()),
            reauth_required=bool(data.get("reauth_required")),
            last_refresh_at=data.get("last_refresh_at"),
            last_error=data.get("last_error"),
            client_secret=data.get("client_secret"),
            rotation_seen=data.get("rotation_seen"),
        )

    def forget_tokens(self) -> ConnectionState:
        return replace(self, tokens=None, reauth_required=False, last_error=None)


def status_of(state: ConnectionState | None, now: float) -> Status:
    if state is None or state.tokens is None:
        return "not_connected"
    if state.reauth_required:
        return "reauth_required"
    if state.tokens.expires_at is not None and now >= state.tokens.expires_at:
        return "expired"
    return "connected"


def public_view(settings: ConnectionSettings, state: ConnectionState | None, now: float) -> dict[str, Any]:
    """The socket-API shape of a connection: never a secret."""
    tokens = state.tokens if state else None
    return {
        "name": settings.name,
        "server_url": settings.server_url,
        "status": status_of(state, now),
        "scopes": list(tokens.scope) if tokens else [],
        "expires_at": tokens.expires_at if tokens else None,
    }
