"""What `show` and `list` answer: views of a connection, built from settings
and vault state; never a secret.

The short row and the orphan view are `broker.model.public_view` and
`orphan_view`; this adds the full detail that `show` and the GUI's details
pane use. The engine only loads the store and calls these.
"""

from __future__ import annotations

from typing import Any

from ..model import ConnectionSettings, ConnectionState, ConnectionView, public_view
from ..oauth.checklist import security_check

__all__ = ["connection_rows", "detail_view"]


def connection_rows(
    settings: dict[str, ConnectionSettings], states: dict[str, ConnectionState], now: float
) -> list[ConnectionView]:
    """One `public_view` per connection, by name."""
    return [public_view(s, states.get(n), now) for n, s in sorted(settings.items())]


def detail_view(settings: ConnectionSettings, state: ConnectionState, now: float) -> dict[str, Any]:
    """`public_view` plus what discovery found, the registration, the token
    bookkeeping and the security checklist."""
    view: dict[str, Any] = dict(public_view(settings, state, now))
    d = settings.discovered
    reg = state.registration
    tokens = state.tokens
    view.update(
        {
            "resource": d.resource if d else None,
            "send_resource": settings.use_resource,
            "issuer": d.issuer if d else None,
            "requested_scopes": list(state.requested_scope or (d.scopes if d else ())),
            "registration": {
                "method": reg.method if reg else (d.registration_method if d else None),
                "client_id": reg.client_id if reg else settings.client_id,
                "redirect_uri": reg.redirect_uri if reg else None,
                "token_endpoint_auth_method": reg.token_endpoint_auth_method if reg else None,
            },
            "has_refresh_token": bool(tokens and tokens.refresh_token),
            "obtained_at": tokens.obtained_at if tokens else None,
            "last_refresh_at": state.last_refresh_at,
            "last_error": state.last_error,
            "authorization_server": d.auth_server.to_json() if d else None,
            "redirect_port": settings.redirect_port,
            "redirect_path": settings.redirect_path,
            "security": [
                item.to_json()
                for item in security_check(
                    d.auth_server, resource_sent=settings.use_resource, rotation_seen=state.rotation_seen
                )
            ]
            if d
            else [],
        }
    )
    return view
