"""What `import` finds in a client's config, and the reading shared by the JSON clients.

A remote server appears in client configs in two shapes: an entry with a
`url` (streamable HTTP or SSE), or a stdio entry that starts mcp-remote
(`npx [-y] mcp-remote URL ...`, `mcp-remote URL ...`). Entries that already
run mcp-token-broker are recognised and left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ClientConfigUnreadable
from ..oauth.urls import suggest_name as url_name

__all__ = [
    "MAX_BYTES",
    "read_bytes",
    "read_file",
    "ConfigFile",
    "FoundServer",
    "entries_in",
    "found_in",
    "read_config",
    "remote_of",
    "strip_jsonc",
    "suggest_name",
]

#: Keys that say how a client reaches a server; a rewrite replaces them and keeps the rest.
TRANSPORT_KEYS = ("type", "transport", "url", "serverUrl", "command", "args", "headers", "headersHelper", "env")


@dataclass(frozen=True)
class ConfigFile:
    """One client config file as read: its bytes (to detect a change before
    rewriting) and its parsed document."""

    path: Path
    raw: bytes
    data: dict[str, Any]
    #: False when the file needed JSONC tolerance (comments, trailing commas):
    #: it can be read but not rewritten without losing the comments.
    plain: bool = True

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass(frozen=True)
class FoundServer:
    """One remote MCP server in one client's config."""

    client: str  # a key of broker.importing.scan.CLIENT_NAMES
    path: Path  # the config file
    #: Where the servers table sits in the document, e.g. ("mcpServers",) or
    #: ("projects", "/home/me/app", "mcpServers"); ("mcp_servers",) for Codex.
    table: tuple[str, ...]
    entry: str  # the entry's key in that table
    url: str
    via: str  # "http", "sse" or "mcp-remote"
    #: mcp-remote's own arguments after the URL (they change its storage hash).
    mcp_remote_args: tuple[str, ...] = field(default=(), compare=False)
    #: sha256 of the file as read: a rewrite refuses if it changed since.
    digest: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return suggest_name(self.entry, self.url)

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "path": str(self.path),
            "table": list(self.table),
            "entry": self.entry,
            "name": self.name,
            "url": self.url,
            "via": self.via,
        }


_LINE_COMMENT = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])', re.S)


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's settings and mcp.json) as plain JSON."""
    text = _LINE_COMMENT.sub(lambda m: m.group(1) or "", text)
    return _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)


#: No client config or mcp-remote file comes near this; a bigger one is refused unread.
MAX_BYTES = 16 * 1024 * 1024


def read_file(path: Path) -> tuple[bytes, os.stat_result] | None:
    """A client's config file (or mcp-remote's) as bytes with the stat of
    what was read, None when there is none. Only a regular file of at most
    MAX_BYTES is read: a link to /dev/zero would fill memory and a FIFO would
    block (hence O_NONBLOCK on the open). Any failure is a
    `ClientConfigUnreadable` (one line)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClientConfigUnreadable(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClientConfigUnreadable(f"{path} is not a regular file")
        if st.st_size > MAX_BYTES:
            raise ClientConfigUnreadable(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:  # it grew while we read
                raise ClientConfigUnreadable(f"{path} is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    except OSError as exc:
        raise ClientConfigUnreadable(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks), st


def read_bytes(path: Path) -> bytes | None:
    """read_file without the stat."""
    got = read_file(path)
    return None if got is None else got[0]


def read_config(path: Path, *, jsonc: bool = False) -> ConfigFile | None:
    """The file at `path`, or None when there is none. A file that is not a
    JSON object is a `ClientConfigUnreadable` (one line, never its content)."""
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ClientConfigUnreadable(f"{path} is not UTF-8 text") from None
    plain = True
    if not text.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if not jsonc:
                raise ClientConfigUnreadable(f"{path} is not valid JSON (line {exc.lineno})") from None
            try:
                data = json.loads(strip_jsonc(text))
            except json.JSONDecodeError as exc2:
                raise ClientConfigUnreadable(f"{path} is not valid JSON (line {exc2.lineno})") from None
            plain = False
    if not isinstance(data, dict):
        raise ClientConfigUnreadable(f"{path} does not hold a JSON object")
    return ConfigFile(path, raw, data, plain)


def _is_mcp_remote(word: str) -> bool:
    base = word.rsplit("/", 1)[-1]
    return base == "mcp-remote" or base.startswith("mcp-remote@")


def _http_url(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def remote_of(entry: object) -> tuple[str, str, tuple[str, ...]] | None:
    """(url, via, mcp-remote's other arguments) for an entry that reaches a
    remote server, else None (a local stdio server, the broker's own proxy,
    something unknown)."""
    if not isinstance(entry, dict):
        return None
    url = _http_url(entry.get("url")) or _http_url(entry.get("serverUrl"))
    if url is not None:
        kind = str(entry.get("type") or entry.get("transport") or "http").lower()
        return url, "sse" if kind == "sse" else "http", ()
    command = entry.get("command")
    args = entry.get("args") or []
    if not isinstance(command, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return None
    words = [command, *args]
    for i, word in enumerate(words):
        if _is_mcp_remote(word) and i + 1 < len(words):
            remote = _http_url(words[i + 1])
            if remote is not None:
                return remote, "mcp-remote", tuple(words[i + 2 :])
    return None


def entries_in(data: dict[str, Any], table: tuple[str, ...]) -> dict[str, Any]:
    """The servers table at `table` inside `data`, or {} when it is absent or not a table."""
    node: Any = data
    for key in table:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def found_in(client: str, config: ConfigFile, table: tuple[str, ...]) -> list[FoundServer]:
    found = []
    for entry, value in entries_in(config.data, table).items():
        remote = remote_of(value)
        if remote is not None:
            url, via, extra = remote
            found.append(FoundServer(client, config.path, table, entry, url, via, extra, config.digest))
    return found


def suggest_name(entry: str, url: str) -> str:
    """A connection name (broker.model.NAME_RE) from the entry's key, else
    from the URL as the Add dialog names it (broker.oauth.urls.suggest_name)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", entry.lower()).strip("-._")[:64]
    return name or url_name(url) or "server"
