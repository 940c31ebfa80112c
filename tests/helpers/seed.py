"""Write a connection straight into a store, for tests that need one without a login."""

from __future__ import annotations

from broker.model import ConnectionSettings, ConnectionState
from broker.oauth.tokens import TokenSet
from broker.secret import Secret
from broker.storage.store import Store


def seed_connection(store: Store, *, now: int, lifetime: int, name: str = "demo") -> None:
    """`name` at https://mcp.example.com/mcp with a token obtained at `now`
    that lives `lifetime` seconds, and a refresh token (never used: no server)."""
    with store.transaction() as txn:
        txn.settings[name] = ConnectionSettings(name=name, server_url="https://mcp.example.com/mcp", added_at=now)
        txn.states[name] = ConnectionState(
            tokens=TokenSet(
                access_token=Secret("a" * 40),
                token_type="Bearer",
                expires_at=now + lifetime,
                scope=("mcp:read",),
                refresh_token=Secret("r" * 40),
                obtained_at=now,
            )
        )
