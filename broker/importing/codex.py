"""Codex CLI: ~/.codex/config.toml ($CODEX_HOME/config.toml when set).

Documented format (github.com/openai/codex, docs/config.md, "mcp_servers"):

    [mcp_servers.NAME]
    command = "npx"
    args = ["-y", "mcp-remote", "https://mcp.example.com/mcp"]
    env = { "KEY" = "value" }

or, for streamable HTTP, `url = "https://..."` with `bearer_token_env_var`
or `http_headers`. The broker's replacement is the stdio proxy:
`command = "mcp-token-broker"`, `args = ["proxy", "NAME"]`.

Python reads TOML (tomllib) but cannot write it, and a TOML writer would
reformat the user's file. So a rewrite edits text: only the lines of the
picked `[mcp_servers.NAME]` table that say how to reach the server
(`command`, `args`, `url`, `bearer_token_env_var`, `http_headers`,
`env_http_headers`) are replaced; every other line stays byte for byte. The
result is parsed again and must equal the original everywhere but those
keys, or nothing is written.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from ..cli.snippets import _toml_string  # the snippet's own quoting, DEL escaped
from ..errors import ClientConfigUnreadable, ImportRefused
from .found import ConfigFile, FoundServer, found_in, read_bytes

__all__ = ["CLIENT", "TABLE", "config_paths", "find", "read", "rewrite_text"]

CLIENT = "codex"
TABLE = ("mcp_servers",)
#: The keys of a server table that say how to reach it.
TRANSPORT = ("command", "args", "url", "bearer_token_env_var", "http_headers", "env_http_headers")


def config_paths(home: Path, env: dict[str, str] | None = None) -> list[Path]:
    env = dict(os.environ) if env is None else env
    base = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex"
    return [base / "config.toml"]


def read(path: Path) -> ConfigFile | None:
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClientConfigUnreadable(f"{path} is not valid TOML ({str(exc).splitlines()[0]})") from None
    return ConfigFile(path, raw, data)


def find(config: ConfigFile) -> list[FoundServer]:
    return found_in(CLIENT, config, TABLE)


def _header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a `[a.b."c"]` table header line, else None."""
    stripped = line.strip()
    if not stripped.startswith("[") or stripped.startswith("[["):
        return None
    try:
        doc: Any = tomllib.loads(stripped + "\n")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(doc, dict) and len(doc) == 1:
        key = next(iter(doc))
        path.append(key)
        doc = doc[key]
    return tuple(path) if path and doc == {} else None


def _any_header(line: str) -> bool:
    stripped = line.lstrip()
    return stripped.startswith("[[") or _header_path(line) is not None


def _key_of(line: str) -> str | None:
    """The bare or quoted key a `key = value` line sets, else None."""
    head, sep, _ = line.partition("=")
    if not sep:
        return None
    key = head.strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        key = key[1:-1]
    return key or None


def _value_end(lines: list[str], start: int) -> int:
    """The index after the last line of the value that starts on `start`
    (an array may span lines). Brackets inside strings are skipped."""
    depth = 0
    i = start
    while i < len(lines):
        text = lines[i] if i > start else lines[i].partition("=")[2]
        quote = ""
        j = 0
        while j < len(text):
            ch = text[j]
            if quote:
                if ch == "\\" and quote == '"':
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                if text.startswith(ch * 3, j):
                    raise ImportRefused("a multi-line string in that Codex entry: rewrite it by hand")
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            j += 1
        i += 1
        if depth <= 0:
            return i
    raise ImportRefused("an unterminated value in that Codex entry: rewrite it by hand")


def rewrite_text(text: str, entry: str, command: str, args: list[str]) -> str:
    """`text` with `[mcp_servers.<entry>]` running `command args`; every line
    outside that table's transport keys unchanged. `ImportRefused` when the
    entry is not written as its own table (an inline table, dotted keys)."""
    lines = text.splitlines(keepends=True)
    header = None
    for i, line in enumerate(lines):
        if _header_path(line) == ("mcp_servers", entry):
            header = i
            break
    if header is None:
        raise ImportRefused(
            f"the Codex entry {entry!r} is not written as its own [mcp_servers.{entry}] table: rewrite it by hand"
        )
    end = next((i for i in range(header + 1, len(lines)) if _any_header(lines[i])), len(lines))
    newline = "\r\n" if lines[header].endswith("\r\n") else "\n"
    body: list[str] = []
    i = header + 1
    while i < end:
        key = _key_of(lines[i]) if not lines[i].lstrip().startswith("#") else None
        if key in TRANSPORT:
            i = _value_end(lines, i)
            continue
        body.append(lines[i])
        i += 1
    new = [
        f"command = {_toml_string(command)}{newline}",
        f"args = [{', '.join(_toml_string(a) for a in args)}]{newline}",
    ]
    if not lines[header].endswith(("\n", "\r")):
        lines[header] += newline
    out = "".join(lines[: header + 1] + new + body + lines[end:])
    _check(text, out, entry, command, args)
    return out


def _check(before: str, after: str, entry: str, command: str, args: list[str]) -> None:
    """The rewrite changed exactly the picked entry's transport, or refuse."""
    old, new = tomllib.loads(before), tomllib.loads(after)
    old_entry = old["mcp_servers"][entry]
    new_entry = new.get("mcp_servers", {}).get(entry, {})
    expected = {k: v for k, v in old_entry.items() if k not in TRANSPORT} | {"command": command, "args": args}
    new["mcp_servers"] = {k: v for k, v in new["mcp_servers"].items() if k != entry}
    old["mcp_servers"] = {k: v for k, v in old["mcp_servers"].items() if k != entry}
    if new_entry != expected or new != old:
        raise ImportRefused(f"could not rewrite the Codex entry {entry!r} safely: rewrite it by hand")
