"""mcp-remote's stored OAuth state in ~/.mcp-auth, read so the broker can adopt it.

Layout, from mcp-remote's source (src/lib/mcp-auth-config.ts, 0.15.1):
- the directory is $MCP_REMOTE_CONFIG_DIR, else ~/.mcp-auth;
- inside it `mcp-remote-v1/` (CONFIG_STORE_VERSION 1, from 0.1.30 on) or,
  written by older releases, `mcp-remote-<its version>/`;
- per server, `<hash>_tokens.json` (the token response plus `expires_at` in
  milliseconds, `requested_scope` and `issuer`) and `<hash>_client_info.json`
  (the RFC 7591 registration response plus `issuer`), both 0600 JSON. Other
  `<hash>_*` files are short-lived (code verifier, discovery state, leases).
- `<hash>` is md5 of the server URL, joined with '|' to the `--resource`
  value, the JSON of sorted `--authorize-param`s and `--header`s, the static
  client metadata URL and the token endpoint when given
  (`getServerUrlHash`). No file records the URL itself, so `import` matches
  the hash against the URLs found in client configs (with their mcp-remote
  arguments) and those given with --url.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ClientConfigUnreadable, ImportRefused
from ..oauth.registration import ClientRegistration
from ..oauth.tokens import TokenSet
from ..secret import Secret
from .found import read_file

__all__ = ["StoredAuth", "auth_dir", "delete_plaintext", "read_stored", "server_hash", "url_hashes"]

_DIR = re.compile(r"mcp-remote-(v\d+|\d+\.\d+\.\d+)")
_TOKENS = re.compile(r"([0-9a-f]{32})_tokens\.json")


def auth_dir(home: Path, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env["MCP_REMOTE_CONFIG_DIR"]) if env.get("MCP_REMOTE_CONFIG_DIR") else home / ".mcp-auth"


def server_hash(url: str, resource: str | None = None, headers: dict[str, str] | None = None) -> str:
    """mcp-remote's `getServerUrlHash` for the arguments `import` understands."""
    parts = [url]
    if resource:
        parts.append(resource)
    if headers:
        parts.append(json.dumps(dict(sorted(headers.items())), separators=(",", ":"), ensure_ascii=False))
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()


def url_hashes(url: str, mcp_remote_args: tuple[str, ...] = ()) -> set[str]:
    """The hashes mcp-remote would use for `url` run with these arguments."""
    resource = None
    headers: dict[str, str] = {}
    args = list(mcp_remote_args)
    for i, arg in enumerate(args[:-1]):
        if arg == "--resource":
            resource = args[i + 1]
        elif arg == "--header" and ":" in args[i + 1]:
            key, _, value = args[i + 1].partition(":")
            headers[key.strip()] = value.strip()
    return {server_hash(url), server_hash(url, resource, headers or None)}


def _version_key(name: str) -> tuple[int, ...]:
    tag = _DIR.fullmatch(name)
    assert tag is not None
    value = tag.group(1)
    # The versioned store (v1) is newer than every release-named one.
    return (1_000_000, int(value[1:])) if value.startswith("v") else tuple(int(p) for p in value.split("."))


@dataclass(frozen=True)
class StoredAuth:
    """One server's tokens and registration as mcp-remote stored them."""

    hash: str
    tokens_file: Path
    client_info_file: Path | None
    tokens_json: dict[str, Any]
    client_info_json: dict[str, Any] | None
    mtime: float

    def __repr__(self) -> str:  # the JSON holds tokens: never print it
        return f"StoredAuth(hash={self.hash!r}, tokens_file={str(self.tokens_file)!r})"

    @property
    def issuer(self) -> str | None:
        for doc in (self.tokens_json, self.client_info_json or {}):
            if isinstance(doc.get("issuer"), str):
                return str(doc["issuer"])
        return None

    def token_set(self) -> TokenSet:
        """mcp-remote's token file as a TokenSet (its `expires_at` is in ms)."""
        t = self.tokens_json
        expires_ms = t.get("expires_at")
        if isinstance(expires_ms, (int, float)) and expires_ms > 0:
            expires_at: int | None = int(expires_ms // 1000)
        elif isinstance(t.get("expires_in"), (int, float)):
            expires_at = int(self.mtime + t["expires_in"])
        else:
            expires_at = None
        refresh = t.get("refresh_token")
        return TokenSet(
            access_token=Secret(str(t["access_token"])),
            token_type=str(t.get("token_type") or "Bearer"),
            expires_at=expires_at,
            scope=tuple(str(t.get("scope") or "").split()),
            refresh_token=Secret(str(refresh)) if refresh else None,
            obtained_at=int(self.mtime),
        )

    def registration(self, issuer: str) -> ClientRegistration | None:
        """The client mcp-remote registered (RFC 7591 response), for `issuer`."""
        info = self.client_info_json
        if not info or not isinstance(info.get("client_id"), str):
            return None
        secret = info.get("client_secret")
        method = info.get("token_endpoint_auth_method") or ("client_secret_basic" if secret else "none")
        uris = info.get("redirect_uris") or [""]
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise ImportRefused(f"{self.client_info_file}: redirect_uris is not a list of strings")
        rat = info.get("registration_access_token")
        return ClientRegistration(
            issuer=issuer,
            client_id=info["client_id"],
            method="dynamic",
            redirect_uri=str(uris[0]),
            token_endpoint_auth_method=str(method),
            client_secret=Secret(str(secret)) if secret else None,
            client_secret_expires_at=info.get("client_secret_expires_at"),
            registration_access_token=Secret(str(rat)) if rat else None,
            registration_client_uri=info.get("registration_client_uri"),
        )


def _load(path: Path) -> tuple[dict[str, Any], float] | None:
    """A JSON file mcp-remote wrote and its mtime (from the read itself),
    None when there is none; `ClientConfigUnreadable` otherwise."""
    got = read_file(path)  # regular files of a bounded size only
    if got is None:
        return None
    raw, st = got
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ClientConfigUnreadable(f"{path} is not a JSON file mcp-remote wrote") from None
    if not isinstance(data, dict):
        raise ClientConfigUnreadable(f"{path} is not a JSON file mcp-remote wrote")
    return data, st.st_mtime


def read_stored(base: Path, problems: list[str] | None = None) -> list[StoredAuth]:
    """Every server with a token file under `base`, the newest store's copy
    when several versions of mcp-remote kept one. A file that cannot be read
    is skipped, its one line added to `problems`: one bad file must not hide
    the others (as in scan)."""
    if not base.is_dir():
        return []
    stores = sorted(
        (d for d in base.iterdir() if d.is_dir() and _DIR.fullmatch(d.name)), key=lambda d: _version_key(d.name)
    )
    found: dict[str, StoredAuth] = {}
    for store in stores:
        for path in sorted(store.iterdir()):
            match = _TOKENS.fullmatch(path.name)
            if match is None:
                continue
            info_path = store / f"{match.group(1)}_client_info.json"
            try:
                tokens = _load(path)
                info = _load(info_path)
            except ClientConfigUnreadable as exc:
                if problems is not None:
                    problems.append(str(exc))
                continue
            if tokens is None or not isinstance(tokens[0].get("access_token"), str):
                continue
            found[match.group(1)] = StoredAuth(
                match.group(1),
                path,
                info_path if info else None,
                tokens[0],
                info[0] if info else None,
                tokens[1],
            )
    return list(found.values())


def delete_plaintext(stored: StoredAuth) -> list[Path]:
    """Remove the token and client files (the secrets); return what went."""
    gone = []
    for path in (stored.tokens_file, stored.client_info_file):
        if path is not None and path.exists():
            path.unlink()
            gone.append(path)
    return gone
