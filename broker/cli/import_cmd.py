"""`mcp-token-broker import`: add the remote servers other MCP clients use,
optionally point those clients at the broker, and adopt mcp-remote's tokens.

Connections are added the normal way (discovery against the real server,
through the service when one runs). A client's config is rewritten only for
the entries picked, and only with --rewrite or a "yes" at the prompt
(broker.importing.rewrite keeps a backup and writes atomically).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ImportRefused
from ..importing.found import FoundServer, suggest_name
from ..importing.mcp_remote import StoredAuth, auth_dir, delete_plaintext, read_stored, url_hashes
from ..importing.naming import unique_name
from ..importing.rewrite import by_file, rewrite_file
from ..importing.scan import CLIENT_NAMES, scan
from ..oauth.registration import ClientRegistration
from ..oauth.urls import canonical_server_url
from ..service.adoption import adoption_body

__all__ = ["run_import"]


def _interactive(args: argparse.Namespace) -> bool:
    return not (args.all or args.pick or args.json or args.dry_run) and sys.stdin.isatty()


def _ask(question: str) -> str:
    print(question, end=" ", flush=True)
    return sys.stdin.readline().strip()


def _choose(labels: list[str], names: list[str], keys: list[str], args: argparse.Namespace) -> list[int]:
    """Indexes picked by --all, --pick or the prompt."""
    if args.all:
        return list(range(len(names)))
    if args.pick:
        unknown = [p for p in args.pick if p not in names and p not in keys]
        if unknown:
            raise ImportRefused(f"nothing found named {', '.join(unknown)}; run `mcp-token-broker import --dry-run`")
        return [i for i in range(len(names)) if names[i] in args.pick or keys[i] in args.pick]
    if not _interactive(args):
        return []
    answer = _ask("Import which? (numbers separated by spaces, 'all', or Enter for none):").lower()
    if answer == "all":
        return list(range(len(names)))
    picked = []
    for word in answer.replace(",", " ").split():
        if not word.isdigit() or not 1 <= int(word) <= len(labels):
            raise ImportRefused(f"{word!r} is not one of the numbers shown")
        picked.append(int(word) - 1)
    return sorted(set(picked))


class _Connections:
    """Existing connections and adding new ones: the service when it runs, else the engine."""

    def __init__(self, args: argparse.Namespace, service: Any, engine_of: Any) -> None:
        self.args, self.service, self.engine_of = args, service, engine_of
        if service is not None:
            views = service.request("GET", "/v1/connections")["connections"]
        else:
            engine = engine_of(args)
            views = engine.list()
            asyncio.run(engine.transport.aclose())
        self.by_url = {canonical_server_url(v["server_url"]): v["name"] for v in views}
        self.names = {v["name"] for v in views}

    def name_for(self, found_name: str, url: str) -> tuple[str, bool]:
        """(connection name, exists already) for `url`."""
        url = canonical_server_url(url)
        if url in self.by_url:
            return self.by_url[url], True
        return unique_name(found_name, self.names), False

    def add(self, name: str, url: str) -> None:
        if self.service is not None:
            self.service.request("POST", "/v1/connections", {"name": name, "server_url": url}, timeout=120)
        else:

            async def run() -> None:
                engine = self.engine_of(self.args)
                try:
                    await engine.add(name, url)
                finally:
                    await engine.transport.aclose()

            asyncio.run(run())
        self.by_url[canonical_server_url(url)] = name
        self.names.add(name)


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def run_import(args: argparse.Namespace, service: Any, engine_of: Any) -> int:
    if args.source == "mcp-remote":
        return _from_mcp_remote(args, service, engine_of)
    found = scan(_home(), project=Path.cwd())
    out: dict[str, Any] = {"found": [f.to_json() for f in found.servers], "problems": found.problems}
    for problem in found.problems:
        print(f"mcp-token-broker: warning: {problem}", file=sys.stderr)
    if not args.json:
        _print_found(found.servers)
    picked = _pick(found.servers, args)
    rewrite_too = args.rewrite
    if picked and not rewrite_too and _interactive(args):
        rewrite_too = _ask("Also rewrite the client's config to go through the broker? [y/N]").lower() in ("y", "yes")
    imported, rewritten = [], []
    if picked and not args.dry_run:
        conns = _Connections(args, service, engine_of)
        named = []
        for server in picked:
            name, exists = conns.name_for(server.name, server.url)
            if not exists:
                conns.add(name, server.url)
            named.append((server, name))
            imported.append({"name": name, "url": server.url, "added": not exists, "client": server.client})
            if not args.json:
                print(f"{'Added' if not exists else 'Already here:'} {name} ({server.url})")
        # One read, one backup and one write per file, however many of its entries were picked.
        for group in by_file(named) if rewrite_too else []:
            backup = rewrite_file(group)
            for server, _ in group:
                rewritten.append({"path": str(server.path), "entry": server.entry, "backup": str(backup)})
                if not args.json:
                    print(f"Rewrote {server.entry!r} in {server.path} (backup: {backup.name})")
    elif picked and not args.json:
        for server in picked:
            print(f"Would add {server.name} ({server.url}){' and rewrite its entry' if rewrite_too else ''}")
    out |= {"imported": imported, "rewritten": rewritten, "dry_run": bool(args.dry_run)}
    if args.json:
        print(json.dumps(out, indent=2))
    elif imported and any(i["added"] for i in imported):
        print("Next: mcp-token-broker connect NAME (or import --from mcp-remote, if it holds their tokens)")
    return 0


def _label(server: FoundServer) -> str:
    return f"{server.name:<20} {server.url}  [{CLIENT_NAMES[server.client]}: {server.entry!r} via {server.via}]"


def _print_found(servers: list[FoundServer]) -> None:
    if not servers:
        print("No remote MCP servers found in Claude Desktop, Claude Code, Cursor, VS Code or Codex.")
        return
    for i, server in enumerate(servers, 1):
        print(f"{i:>3}. {_label(server)}")


def _pick(servers: list[FoundServer], args: argparse.Namespace) -> list[FoundServer]:
    names = [s.name for s in servers]
    keys = [f"{s.client}:{s.entry}" for s in servers]
    return [servers[i] for i in _choose([_label(s) for s in servers], names, keys, args)]


def _from_mcp_remote(args: argparse.Namespace, service: Any, engine_of: Any) -> int:
    home = _home()
    problems: list[str] = []
    stored = read_stored(auth_dir(home), problems)
    for problem in problems:  # one unreadable file must not hide the others
        print(f"mcp-token-broker: warning: {problem}", file=sys.stderr)
    found = scan(home, project=Path.cwd()).servers
    candidates: list[tuple[str, str, tuple[str, ...]]] = [(s.name, s.url, s.mcp_remote_args) for s in found]
    candidates += [(suggest_name("", u), u, ()) for u in args.url]
    matched: list[tuple[str, str, StoredAuth]] = []
    unmatched: list[StoredAuth] = []
    for auth in stored:
        hit = next(((n, u) for n, u, extra in candidates if auth.hash in url_hashes(u, extra)), None)
        if hit is None:
            unmatched.append(auth)
        else:
            matched.append((hit[0], hit[1], auth))
    if not args.json:
        if not matched:
            print(f"No mcp-remote tokens for a known server URL in {auth_dir(home)}.")
        for i, (name, url, auth) in enumerate(matched, 1):
            print(f"{i:>3}. {name:<20} {url}  [{auth.tokens_file.name}]")
        for auth in unmatched:
            print(f"  ?  {auth.tokens_file}: server unknown; pass --url URL (the URL mcp-remote was given)")
    names = [m[0] for m in matched]
    picked = [matched[i] for i in _choose(names, names, [m[1] for m in matched], args)]
    out: dict[str, Any] = {
        "found": [{"name": n, "url": u, "tokens_file": str(a.tokens_file)} for n, u, a in matched],
        "unmatched": [str(a.tokens_file) for a in unmatched],
        "problems": problems,
        "imported": [],
        "deleted": [],
        "dry_run": bool(args.dry_run),
    }
    if picked and not args.dry_run:
        conns = _Connections(args, service, engine_of)
        named = []
        for found_name, url, auth in picked:  # named and added as the clients path does
            name, exists = conns.name_for(found_name, url)
            if not exists:
                conns.add(name, url)
            named.append((name, url, auth))
        if service is not None:
            # The service holds the vault in memory: it adopts them (POST .../adopt).
            _adopt_through(service, named, out)
        else:
            asyncio.run(_adopt_all(args, engine_of, named, out))
        delete = args.delete_plaintext
        if not delete and _interactive(args):
            delete = _ask(
                "Delete mcp-remote's plaintext token files for these servers? "
                "(mcp-remote itself would then log in again) [y/N]"
            ).lower() in ("y", "yes")
        if delete:
            for _, _, auth in picked:
                out["deleted"] += [str(p) for p in delete_plaintext(auth)]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for entry in out["imported"]:
            print(f"Imported {entry['name']} ({entry['url']}): its tokens are in the vault, no login needed")
        for path in out["deleted"]:
            print(f"Deleted {path}")
    return 0


async def _adopt_all(args: argparse.Namespace, engine_of: Any, picked: list[Any], out: dict[str, Any]) -> None:
    engine = engine_of(args)
    try:
        for name, url, auth in picked:  # added already (_Connections)
            registration = _registration(auth, url, name, str(engine.show(name).get("issuer") or ""))
            await engine.adopt(name, auth.token_set(), registration)  # checked as POST .../adopt checks
            out["imported"].append({"name": name, "url": url})
    finally:
        await engine.transport.aclose()


def _registration(auth: StoredAuth, url: str, name: str, discovered_issuer: str) -> ClientRegistration:
    """mcp-remote's client, provided its tokens come from the issuer the server names now."""
    if auth.issuer is not None and discovered_issuer != auth.issuer:
        raise ImportRefused(
            f"mcp-remote's tokens for {url} come from {auth.issuer}, but the server now names "
            f"{discovered_issuer}; run `mcp-token-broker connect {name}` instead"
        )
    registration = auth.registration(discovered_issuer)
    if registration is None:
        raise ImportRefused(f"mcp-remote kept no client registration for {url}; run `connect {name}` instead")
    return registration


def _adopt_through(service: Any, picked: list[Any], out: dict[str, Any]) -> None:
    """The running service adds the connections and adopts the tokens, so its
    memory and the vault agree (no restart). Its answers never hold a token."""
    from ..client.api_client import quote

    for name, url, auth in picked:  # added already (_Connections)
        shown = service.request("GET", f"/v1/connections/{quote(name)}?detail=full")
        registration = _registration(auth, url, name, str(shown.get("issuer") or ""))
        body = adoption_body(auth.token_set(), registration)
        service.request("POST", f"/v1/connections/{quote(name)}/adopt", body)
        out["imported"].append({"name": name, "url": url})
