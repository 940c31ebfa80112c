"""Point one picked entry of a client's config at the broker, losing nothing.

The order is what keeps the user's file safe:
1. read the file (all its picked entries at once) and refuse (`ClientConfigChanged`) if it is not the file
   `import` scanned (its sha256);
2. build the new text: only the picked entry changes; for JSON every other
   key keeps its value and its place, for TOML every other line its bytes
   (broker.importing.codex); the result is checked before anything is written;
3. write a timestamped backup of the original next to it (0600, never over
   an existing file);
4. compare the file once more, then replace it atomically
   (broker.storage.atomic) and give it back its permission bits.

The new entry is the one `mcp-token-broker config NAME --client C` prints
(broker.cli.snippets), so both paths agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli.snippets import snippet
from ..errors import ClientConfigChanged, ImportRefused
from ..storage.atomic import atomic_write
from . import claude_code, claude_desktop, codex, cursor, vscode
from .found import TRANSPORT_KEYS, FoundServer, entries_in, read_bytes

__all__ = ["backup_path", "by_file", "new_entry", "rewrite", "rewrite_file", "rewritten_json"]

#: The snippet each JSON client's entry is built from, as each client's module names it.
_SNIPPET = {m.CLIENT: m.SNIPPET for m in (claude_code, claude_desktop, cursor, vscode)}


def new_entry(found: FoundServer, name: str, command: str | None = None) -> dict[str, Any]:
    """The broker's entry for `found`'s client: headersHelper for Claude Code,
    the stdio proxy for the others (the snippet's own entry)."""
    client = _SNIPPET.get(found.client, "claude-desktop")
    doc = json.loads(snippet(client, name, found.url, command=command))
    table = doc["servers"] if client == "vscode" else doc["mcpServers"]
    entry: dict[str, Any] = table[name]
    return entry


def _indent(text: str) -> str | None:
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else None


def rewritten_json(raw: bytes, found: FoundServer, entry: dict[str, Any]) -> bytes:
    """`raw` with `found`'s entry's transport keys replaced by `entry`'s; the
    entry's other keys (disabled, timeout, ...) and every other key of the
    document keep their values and their order."""
    text = raw.decode("utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ImportRefused(
            f"{found.path} has comments, which a rewrite would lose: paste the entry by hand "
            f"(mcp-token-broker config {found.name} --client {found.client})"
        ) from None
    before = json.loads(text)
    table = entries_in(data, found.table)
    old = table.get(found.entry)
    if not isinstance(old, dict):
        raise ClientConfigChanged(f"{found.path} no longer has the entry {found.entry!r}; run import again")
    table[found.entry] = entry | {k: v for k, v in old.items() if k not in TRANSPORT_KEYS and k not in entry}
    # Everything but the picked entry must be as it was, in the same order.
    check = json.loads(json.dumps(data))
    entries_in(check, found.table)[found.entry] = old
    if json.dumps(check) != json.dumps(before):
        raise ImportRefused(f"could not rewrite {found.path} safely: paste the entry by hand")
    out = json.dumps(data, indent=_indent(text), ensure_ascii=False)
    if text.endswith("\n"):
        out += "\n"
    prefix = b"\xef\xbb\xbf" if raw.startswith(b"\xef\xbb\xbf") else b""
    return prefix + out.encode()


def backup_path(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return path.with_name(f"{path.name}.bak-{stamp}")


def _write_backup(path: Path, raw: bytes, now: float) -> Path:
    """The original bytes beside the file, 0600, never over an existing file."""
    base = backup_path(path, now)
    for n in range(100):
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return candidate
    raise ImportRefused(f"too many backups of {path} this second; try again")


def _read_unchanged(found: FoundServer) -> bytes:
    raw = read_bytes(found.path)
    if raw is None:
        raise ClientConfigChanged(f"{found.path} was removed since import read it; nothing was written")
    if hashlib.sha256(raw).hexdigest() != found.digest:
        raise ClientConfigChanged(f"{found.path} changed since import read it; nothing was written, run import again")
    return raw


def by_file(picks: Sequence[tuple[FoundServer, str]]) -> list[list[tuple[FoundServer, str]]]:
    """The picks grouped by config file, in the order they came: every entry
    of one file is rewritten in one read, one backup and one write."""
    groups: dict[Path, list[tuple[FoundServer, str]]] = {}
    for found, name in picks:
        groups.setdefault(found.path, []).append((found, name))
    return list(groups.values())


def rewrite_file(
    picks: Sequence[tuple[FoundServer, str]], *, command: str | None = None, now: float | None = None
) -> Path:
    """Rewrite the picked entries of one file, each to take its token from
    its connection name. Returns the backup's path. Nothing is written when
    anything is off.

    A config that is a symlink (a dotfile manager's) is written through: the
    file it points at is replaced, its backup beside it, and the link stays."""
    first = picks[0][0]
    if any(found.path != first.path or found.digest != first.digest for found, _ in picks):
        raise ValueError("rewrite_file takes the entries of one file, from one scan")
    raw = _read_unchanged(first)
    new = raw
    for found, name in picks:
        entry = new_entry(found, name, command)
        if found.client == "codex":
            text = codex.rewrite_text(new.decode("utf-8"), found.entry, entry["command"], list(entry["args"]))
            new = text.encode()
        else:
            new = rewritten_json(new, found, entry)
    target = Path(os.path.realpath(first.path))
    mode = stat.S_IMODE(os.stat(target).st_mode)
    backup = _write_backup(target, raw, time.time() if now is None else now)
    try:
        _read_unchanged(first)  # once more, right before the replace
    except ClientConfigChanged:
        with contextlib.suppress(OSError):
            backup.unlink()
        raise
    atomic_write(target, new, private_dir=False)
    os.chmod(target, mode)
    return backup


def rewrite(found: FoundServer, name: str, *, command: str | None = None, now: float | None = None) -> Path:
    """Rewrite `found`'s entry to take its token from connection `name`
    (rewrite_file with one entry). Returns the backup's path."""
    return rewrite_file([(found, name)], command=command, now=now)
