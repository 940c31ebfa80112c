"""`import`: remote servers found in real client config files, entries
rewritten without touching anything else, and mcp-remote's real token files
adopted into the vault."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from broker.cli.snippets import snippet
from broker.client.api_client import BrokerClient
from broker.errors import ClientConfigChanged, ImportRefused
from broker.importing.mcp_remote import read_stored, server_hash
from broker.importing.rewrite import rewrite
from broker.importing.scan import scan

from .conftest import start_service
from .servers.fixtures import BROWSER_SCRIPT, start_mcp_server

REPO = Path(__file__).resolve().parent.parent
MCP_REMOTE = REPO / "tests" / "mcp_remote" / "node_modules" / "mcp-remote" / "dist" / "client.js"

URL_A = "https://mcp.alpha.example/mcp"
URL_B = "https://beta.example/sse"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def claude_json(home: Path, project: Path, url: str = URL_A) -> Path:
    # ~/.claude.json as Claude Code writes it: its own state beside user- and local-scope servers.
    doc = {
        "numStartups": 12,
        "mcpServers": {
            "alpha": {"type": "http", "url": url},
            "files": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem"]},
            "beta": {"type": "sse", "url": URL_B, "headers": {"X-Team": "t"}},
        },
        "projects": {str(project): {"allowedTools": [], "mcpServers": {"gamma": {"type": "http", "url": URL_A}}}},
        "tipsHistory": {"x": 1},
    }
    return write(home / ".claude.json", json.dumps(doc, indent=2))


def all_configs(home: Path, project: Path) -> None:
    claude_json(home, project)
    write(project / ".mcp.json", json.dumps({"mcpServers": {"proj": {"type": "http", "url": URL_B}}}))
    write(
        home / ".config" / "Claude" / "claude_desktop_config.json",
        json.dumps(
            {
                "mcpServers": {
                    "linear": {"command": "npx", "args": ["-y", "mcp-remote", "https://mcp.linear.app/sse"]},
                    "mine": {"command": "/usr/bin/mcp-token-broker", "args": ["proxy", "mine"]},
                }
            },
            indent=2,
        ),
    )
    write(home / ".cursor" / "mcp.json", json.dumps({"mcpServers": {"Notion": {"url": "https://mcp.notion.com/mcp"}}}))
    write(
        home / ".config" / "Code" / "User" / "mcp.json",
        '{\n  // my servers\n  "servers": {\n    "gh": {"type": "http", "url": "https://api.githubcopilot.com/mcp/"},\n'
        '    "local": {"type": "stdio", "command": "node", "args": ["s.js"]},\n  },\n  "inputs": []\n}\n',
    )
    write(
        home / ".codex" / "config.toml",
        '[mcp_servers.sentry]\ncommand = "npx"\nargs = ["-y", "mcp-remote@latest", "https://mcp.sentry.dev/mcp"]\n'
        '\n[mcp_servers.docs]\nurl = "https://docs.example/mcp"\n',
    )


def test_scan_finds_every_clients_remote_servers(tmp_path):
    home, project = tmp_path / "home", tmp_path / "proj"
    all_configs(home, project)
    found = scan(home, system="linux", project=project, env={})
    got = {(s.client, s.entry, s.url, s.via) for s in found.servers}
    assert got == {
        ("claude-code", "alpha", URL_A, "http"),
        ("claude-code", "beta", URL_B, "sse"),
        ("claude-code", "gamma", URL_A, "http"),
        ("claude-code", "proj", URL_B, "http"),
        ("claude-desktop", "linear", "https://mcp.linear.app/sse", "mcp-remote"),
        ("cursor", "Notion", "https://mcp.notion.com/mcp", "http"),
        ("vscode", "gh", "https://api.githubcopilot.com/mcp/", "http"),
        ("codex", "sentry", "https://mcp.sentry.dev/mcp", "mcp-remote"),
        ("codex", "docs", "https://docs.example/mcp", "http"),
    }
    gamma = next(s for s in found.servers if s.entry == "gamma")
    assert gamma.table == ("projects", str(project), "mcpServers")
    assert {s.name for s in found.servers} >= {"notion", "gh", "sentry"}
    assert found.problems == []


def test_a_broken_file_is_one_line_and_the_others_still_count(tmp_path):
    home = tmp_path / "home"
    write(home / ".cursor" / "mcp.json", '{"mcpServers": {')
    write(home / ".codex" / "config.toml", '[mcp_servers.docs]\nurl = "https://docs.example/mcp"\n')
    found = scan(home, system="linux", env={})
    assert [s.entry for s in found.servers] == ["docs"]
    assert found.problems == [f"{home / '.cursor' / 'mcp.json'} is not valid JSON (line 1)"]


def test_rewrite_claude_code_changes_only_the_picked_entry(tmp_path):
    home, project = tmp_path / "home", tmp_path / "proj"
    path = claude_json(home, project)
    home.chmod(0o755)
    original = path.read_bytes()
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "alpha")
    backup = rewrite(picked, "alpha", command="mcp-token-broker", now=1_700_000_000)

    before, after = json.loads(original), json.loads(path.read_bytes())
    expected = json.loads(snippet("claude-code", "alpha", URL_A, command="mcp-token-broker"))["mcpServers"]["alpha"]
    assert after["mcpServers"]["alpha"] == expected
    assert after["mcpServers"]["alpha"]["headersHelper"] == "mcp-token-broker headers alpha"
    # Everything else: same values, same key order, at every level.
    after["mcpServers"]["alpha"] = before["mcpServers"]["alpha"]
    assert json.dumps(after) == json.dumps(before)
    assert list(json.loads(path.read_bytes())) == list(before)
    # The backup is the original, byte for byte, 0600, beside the file; the file keeps its mode.
    assert backup.parent == path.parent and backup.name.startswith(".claude.json.bak-")
    assert backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The home directory is not tightened (atomic_write's private_dir=False).
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def test_rewrite_stdio_clients_runs_the_proxy_and_keeps_other_keys(tmp_path):
    home = tmp_path / "home"
    path = write(
        home / ".cursor" / "mcp.json",
        json.dumps(
            {
                "mcpServers": {
                    "a": {"command": "npx", "args": ["mcp-remote", URL_A], "disabled": False},
                    "b": {"url": URL_B},
                }
            },
            indent=4,
        ),
        mode=0o644,
    )
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "a")
    rewrite(picked, "alpha", command="/opt/bin/mcp-token-broker")
    after = json.loads(path.read_text())
    assert after["mcpServers"]["a"] == {
        "command": "/opt/bin/mcp-token-broker",
        "args": ["proxy", "alpha"],
        "disabled": False,
    }
    assert after["mcpServers"]["b"] == {"url": URL_B}
    assert path.read_text().startswith('{\n    "mcpServers"')  # the file's own indent
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


CODEX = """# my codex config
model = "o4-mini"

[mcp_servers.sentry]
# sentry through mcp-remote
command = "npx"
args = [
  "-y",
  "mcp-remote@latest",   # pinned later
  "https://mcp.sentry.dev/mcp",
]
startup_timeout_sec = 20

[mcp_servers.sentry.env]
SENTRY_ORG = "acme"

[mcp_servers.docs]
url = "https://docs.example/mcp"

[profiles.fast]
model = "gpt-5"
"""


def test_rewrite_codex_keeps_every_other_line_byte_for_byte(tmp_path):
    home = tmp_path / "home"
    path = write(home / ".codex" / "config.toml", CODEX)
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "sentry")
    rewrite(picked, "sentry", command="mcp-token-broker")
    new = path.read_text()
    doc = tomllib.loads(new)
    assert doc["mcp_servers"]["sentry"] == {
        "command": "mcp-token-broker",
        "args": ["proxy", "sentry"],
        "startup_timeout_sec": 20,
        "env": {"SENTRY_ORG": "acme"},
    }
    old_lines, new_lines = CODEX.splitlines(keepends=True), new.splitlines(keepends=True)
    # Lines 0-3 (up to the header) and everything from startup_timeout_sec on are untouched.
    assert new_lines[:4] == old_lines[:4]
    assert new_lines[4:7] == [
        'command = "mcp-token-broker"\n',
        'args = ["proxy", "sentry"]\n',
        "# sentry through mcp-remote\n",
    ]
    assert new_lines[7:] == old_lines[11:]


def test_a_file_changed_since_it_was_read_is_refused_and_left_alone(tmp_path):
    home, project = tmp_path / "home", tmp_path / "proj"
    path = claude_json(home, project)
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "alpha")
    path.write_text(path.read_text().replace('"numStartups": 12', '"numStartups": 13'))
    changed = path.read_bytes()
    with pytest.raises(ClientConfigChanged, match="changed since import read it"):
        rewrite(picked, "alpha")
    assert path.read_bytes() == changed
    assert sorted(p.name for p in path.parent.iterdir()) == [".claude.json"]  # no backup left behind


def test_a_file_with_comments_is_not_rewritten(tmp_path):
    home = tmp_path / "home"
    all_configs(home, tmp_path / "proj")
    path = home / ".config" / "Code" / "User" / "mcp.json"
    original = path.read_bytes()
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "gh")
    with pytest.raises(ImportRefused, match="has comments"):
        rewrite(picked, "gh")
    assert path.read_bytes() == original


def test_codex_inline_table_is_refused(tmp_path):
    home = tmp_path / "home"
    path = write(home / ".codex" / "config.toml", '[mcp_servers]\ndocs = { url = "https://docs.example/mcp" }\n')
    picked = scan(home, system="linux", env={}).servers[0]
    with pytest.raises(ImportRefused, match="not written as its own"):
        rewrite(picked, "docs")
    assert path.read_text() == '[mcp_servers]\ndocs = { url = "https://docs.example/mcp" }\n'


# -- end to end: the real CLI, the real servers -----------------------------


def _env_home(cli, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    cli.env["HOME"] = str(home)
    cli.env.pop("CLAUDE_CONFIG_DIR", None)
    cli.env.pop("CODEX_HOME", None)
    cli.env.pop("MCP_REMOTE_CONFIG_DIR", None)
    return home


def test_cli_import_adds_picked_servers_and_rewrites_only_them(cli, stack, tmp_path):
    _, mcp = stack
    home = _env_home(cli, tmp_path)
    path = claude_json(home, tmp_path / "proj", url=mcp.url)
    original = json.loads(path.read_text())
    dry = cli("import", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert {f["entry"] for f in dry.json()["found"]} == {"alpha", "beta", "gamma"}
    assert cli("list", "--json").json()["connections"] == []

    done = cli("import", "--pick", "claude-code:alpha", "--rewrite", "--json")
    assert done.returncode == 0, done.stderr
    assert done.json()["imported"] == [{"name": "alpha", "url": mcp.url, "added": True, "client": "claude-code"}]
    shown = cli("show", "alpha", "--json").json()
    assert shown["server_url"] == mcp.url and shown["issuer"]  # discovery ran against the real server
    after = json.loads(path.read_text())
    assert after["mcpServers"]["alpha"]["headersHelper"].endswith("headers alpha")
    after["mcpServers"]["alpha"] = original["mcpServers"]["alpha"]
    assert after == original  # gamma (same URL, not picked) and beta untouched


def test_cli_import_unknown_pick_is_one_line(cli, tmp_path):
    _env_home(cli, tmp_path)
    result = cli("import", "--pick", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nothing found named nope" in result.stderr


def digest(token: str) -> str:
    """Compare tokens without printing them in a failure."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _run_mcp_remote(url: str, auth_dir: Path, tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path / "node-home"),
        "PATH": os.environ["PATH"],
        "MCP_REMOTE_CONFIG_DIR": str(auth_dir),
        "BROWSER": BROWSER_SCRIPT,
        "BROWSER_LOG": str(tmp_path / "mcp-remote-browser.log"),
    }
    proc = subprocess.run(
        ["node", str(MCP_REMOTE), url, "--allow-http"], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(not MCP_REMOTE.exists(), reason="run scripts/bootstrap --test (installs tests/mcp_remote)")
def test_import_from_mcp_remote_adopts_its_real_tokens(cli, stack, tmp_path):
    oidc, mcp = stack
    home = _env_home(cli, tmp_path)
    auth_dir = home / ".mcp-auth"
    _run_mcp_remote(mcp.url, auth_dir, tmp_path)  # a real login, as a user of mcp-remote had
    (stored,) = read_stored(auth_dir)
    assert stored.hash == server_hash(mcp.url)
    assert stored.tokens_file.parent.name == "mcp-remote-v1"
    mcp_remote_token = stored.tokens_json["access_token"]
    # The client config that runs it names the URL (Electron's config dir follows XDG_CONFIG_HOME).
    write(
        Path(cli.env["XDG_CONFIG_HOME"]) / "Claude" / "claude_desktop_config.json",
        json.dumps({"mcpServers": {"team": {"command": "npx", "args": ["-y", "mcp-remote", mcp.url, "--allow-http"]}}}),
    )
    result = cli("import", "--from", "mcp-remote", "--all", "--delete-plaintext")
    assert result.returncode == 0, result.stderr
    assert "Imported team" in result.stdout
    assert (
        not stored.tokens_file.exists()
        and not (auth_dir / "mcp-remote-v1" / f"{stored.hash}_client_info.json").exists()
    )
    browser_log = cli.browser_log
    running = start_service(cli)
    try:
        token = cli("token", "team")
        assert token.returncode == 0, token.stderr
        assert digest(token.stdout.strip()) == digest(mcp_remote_token)  # no login: the same token
        assert not browser_log.exists()
        # The imported refresh token and client registration refresh (a client
        # reports the token rejected, which makes the broker refresh at once).
        client = BrokerClient(str(running.socket_path))
        refreshes = oidc.stats()["grants"].get("refresh_token", 0)
        assert client.report_rejected("team", mcp_remote_token)["refreshed"] is True
        fresh = cli("token", "team")
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.strip() and digest(fresh.stdout.strip()) != digest(mcp_remote_token)
        assert oidc.stats()["grants"].get("refresh_token", 0) == refreshes + 1
        assert cli("show", "team", "--json").json()["status"] == "connected"
    finally:
        assert running.stop() == 0, running.log


@pytest.mark.skipif(not MCP_REMOTE.exists(), reason="run scripts/bootstrap --test (installs tests/mcp_remote)")
def test_import_from_mcp_remote_while_the_service_runs(cli, stack, tmp_path):
    """No "stop it, import, start it again": the running service adopts the
    tokens (POST .../adopt), so its memory and the vault agree at once."""
    _, mcp = stack
    home = _env_home(cli, tmp_path)
    auth_dir = home / ".mcp-auth"
    _run_mcp_remote(mcp.url, auth_dir, tmp_path)
    (stored,) = read_stored(auth_dir)
    mcp_remote_token = stored.tokens_json["access_token"]
    running = start_service(cli)
    try:
        result = cli("import", "--from", "mcp-remote", "--url", mcp.url, "--all", "--delete-plaintext")
        assert result.returncode == 0, result.stderr
        name = result.stdout.split()[1]
        assert f"Imported {name}" in result.stdout and not stored.tokens_file.exists()
        token = cli("token", name)  # no restart, no login
        assert token.returncode == 0, token.stderr
        assert digest(token.stdout.strip()) == digest(mcp_remote_token)
        assert not cli.browser_log.exists()
        assert mcp_remote_token not in result.stdout + result.stderr + running.log
    finally:
        assert running.stop() == 0, running.log
    # After a restart the vault holds the same tokens: nothing lived only in memory.
    running = start_service(cli)
    try:
        assert digest(cli("token", name).stdout.strip()) == digest(mcp_remote_token)
    finally:
        assert running.stop() == 0, running.log


def test_import_from_mcp_remote_without_a_known_url_says_what_to_pass(cli, tmp_path):
    home = _env_home(cli, tmp_path)
    h = server_hash("https://unknown.example/mcp")
    write(
        home / ".mcp-auth" / "mcp-remote-v1" / f"{h}_tokens.json",
        json.dumps({"access_token": "x", "token_type": "Bearer"}),
    )
    result = cli("import", "--from", "mcp-remote", "--all")
    assert result.returncode == 0, result.stderr
    assert "pass --url URL" in result.stdout
    assert "x" not in result.stdout.replace("--url", "")  # never the token


def test_mcp_remote_tokens_from_another_issuer_are_refused(cli, stack, tmp_path):
    """Files in mcp-remote's exact format (its saveTokens / saveClientInformation)
    whose issuer is not the one the server names now: nothing is adopted."""
    _, mcp = stack
    home = _env_home(cli, tmp_path)
    store = home / ".mcp-auth" / "mcp-remote-v1"
    h = server_hash(mcp.url)
    tokens = {
        "access_token": "at-from-elsewhere",
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "mcp:read",
        "refresh_token": "rt-from-elsewhere",
        "issuer": "https://evil.example",
        "expires_at": 4102444800000,
        "requested_scope": "mcp:read",
    }
    info = {"client_id": "c1", "redirect_uris": ["http://localhost:1/oauth/callback"], "issuer": "https://evil.example"}
    write(store / f"{h}_tokens.json", json.dumps(tokens, indent=2))
    write(store / f"{h}_client_info.json", json.dumps(info, indent=2))
    result = cli("import", "--from", "mcp-remote", "--url", mcp.url, "--all", "--delete-plaintext")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "come from https://evil.example" in result.stderr
    assert "from-elsewhere" not in result.stdout + result.stderr
    name = result.stdout.split()[1]
    assert cli("show", name, "--json").json()["status"] == "not_connected"
    assert (store / f"{h}_tokens.json").exists()  # nothing deleted


# -- issue 11 section 6, the reviewer's findings ------------------------------


def test_cli_import_rewrites_two_entries_of_one_file_with_one_backup(cli, stack, tmp_path):
    """Each entry kept the scan's digest, so the second rewrite of the same
    file was refused as "changed": one read, one backup, one write per file."""
    _, mcp = stack
    home = _env_home(cli, tmp_path)
    doc = {"numStartups": 1, "mcpServers": {"one": {"type": "http", "url": mcp.url}, "two": {"url": mcp.url}}}
    path = write(home / ".claude.json", json.dumps(doc, indent=2))
    result = cli("import", "--all", "--rewrite")
    assert result.returncode == 0, result.stderr
    after = json.loads(path.read_text())
    assert after["mcpServers"]["one"]["headersHelper"].endswith("headers one")
    assert after["mcpServers"]["two"]["headersHelper"].endswith("headers one")  # the same URL, one connection
    backups = [p for p in home.iterdir() if p.name.startswith(".claude.json.bak-")]
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == doc


def _mcp_remote_files(store: Path, url: str, tokens: dict[str, object], info: dict[str, object]) -> Path:
    """Token and client files as mcp-remote's saveTokens / saveClientInformation write them."""
    h = server_hash(url)
    write(store / f"{h}_client_info.json", json.dumps(info, indent=2))
    return write(store / f"{h}_tokens.json", json.dumps(tokens, indent=2))


GOOD_TOKENS = {
    "access_token": "at-s3cr3t-0123",
    "token_type": "Bearer",
    "expires_in": 3600,
    "scope": "mcp:read",
    "refresh_token": "rt-s3cr3t-0123",
    "expires_at": 4102444800000,
}
GOOD_INFO = {"client_id": "c1", "redirect_uris": ["http://localhost:1/oauth/callback"]}


@pytest.mark.parametrize(
    ("tokens", "info", "says"),
    [
        (GOOD_TOKENS | {"access_token": "at-s3cr3t\r\nX-Evil: 1"}, GOOD_INFO, "access_token"),
        (GOOD_TOKENS | {"token_type": "DPoP"}, GOOD_INFO, "token_type"),
        (GOOD_TOKENS, GOOD_INFO | {"redirect_uris": "http://localhost:1/cb"}, "redirect_uris"),
        (GOOD_TOKENS, GOOD_INFO | {"redirect_uris": 7}, "redirect_uris"),
        (GOOD_TOKENS, GOOD_INFO | {"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
    ],
    ids=["crlf-token", "dpop", "uris-string", "uris-int", "auth-method"],
)
def test_hostile_mcp_remote_files_are_refused_without_a_service(cli, stack, tmp_path, tokens, info, says):
    """Without a running service the engine adopts directly: the same checks
    as POST .../adopt, one line, nothing adopted, nothing deleted."""
    _, mcp = stack
    home = _env_home(cli, tmp_path)
    tokens_file = _mcp_remote_files(home / ".mcp-auth" / "mcp-remote-v1", mcp.url, tokens, info)
    result = cli("import", "--from", "mcp-remote", "--url", mcp.url, "--all", "--delete-plaintext")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    name = result.stdout.split()[1]
    assert cli("show", name, "--json").json()["status"] == "not_connected"
    assert tokens_file.exists()


@pytest.mark.timeout(60)  # before the fix the FIFO blocked the scan for ever
def test_scan_refuses_devices_and_fifos_and_goes_on(tmp_path):
    """A project's .mcp.json -> /dev/zero filled memory; a FIFO hung the scan."""
    home, project = tmp_path / "home", tmp_path / "proj"
    project.mkdir()
    (project / ".mcp.json").symlink_to("/dev/zero")
    (home / ".cursor").mkdir(parents=True)
    os.mkfifo(home / ".cursor" / "mcp.json")
    write(home / ".codex" / "config.toml", '[mcp_servers.docs]\nurl = "https://docs.example/mcp"\n')
    found = scan(home, system="linux", project=project, env={})
    assert [s.entry for s in found.servers] == ["docs"]
    assert found.problems == [
        f"{project / '.mcp.json'} is not a regular file",
        f"{home / '.cursor' / 'mcp.json'} is not a regular file",
    ]


def test_scan_refuses_a_config_over_the_size_cap(tmp_path):
    home = tmp_path / "home"
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse: no disk used
    found = scan(home, system="linux", env={})
    assert found.problems == [f"{path} is larger than 16 MiB"]


def test_rewrite_writes_through_a_symlinked_config(tmp_path):
    """Dotfile managers link ~/.claude.json into a repository: the link stays
    a link and the file it points at is rewritten, its backup beside it."""
    home, dotfiles = tmp_path / "home", tmp_path / "dotfiles"
    target = claude_json(dotfiles, tmp_path / "proj")
    home.mkdir()
    (home / ".claude.json").symlink_to(target)
    original = target.read_bytes()
    picked = next(s for s in scan(home, system="linux", env={}).servers if s.entry == "alpha")
    backup = rewrite(picked, "alpha", command="mcp-token-broker")
    assert (home / ".claude.json").is_symlink() and os.readlink(home / ".claude.json") == str(target)
    assert json.loads(target.read_text())["mcpServers"]["alpha"]["headersHelper"] == "mcp-token-broker headers alpha"
    assert backup.parent == dotfiles and backup.read_bytes() == original
    assert sorted(p.name for p in home.iterdir()) == [".claude.json"]


def test_mcp_remote_import_names_around_a_taken_name(cli, stack, tmp_path):
    """ "team" already names a connection to another server: the import takes
    "team-2", as the clients path does, instead of failing with ConnectionExists."""
    oidc, mcp = stack
    home = _env_home(cli, tmp_path)
    other = start_mcp_server(oidc.issuer)
    try:
        added = cli("add", "team", other.url)
        assert added.returncode == 0, added.stderr
        _mcp_remote_files(home / ".mcp-auth" / "mcp-remote-v1", mcp.url, GOOD_TOKENS, GOOD_INFO)
        write(
            Path(cli.env["XDG_CONFIG_HOME"]) / "Claude" / "claude_desktop_config.json",
            json.dumps({"mcpServers": {"team": {"command": "npx", "args": ["-y", "mcp-remote", mcp.url]}}}),
        )
        result = cli("import", "--from", "mcp-remote", "--all")
        assert result.returncode == 0, result.stderr
        assert "Imported team-2" in result.stdout
        assert cli("show", "team-2", "--json").json()["server_url"] == mcp.url
        assert cli("show", "team", "--json").json()["server_url"] == other.url
    finally:
        other.stop()


def test_one_unreadable_mcp_remote_file_is_a_warning(cli, tmp_path):
    home = _env_home(cli, tmp_path)
    store = home / ".mcp-auth" / "mcp-remote-v1"
    broken = write(store / f"{server_hash('https://a.example/mcp')}_tokens.json", '{"access_token": ')
    write(
        store / f"{server_hash('https://b.example/mcp')}_tokens.json",
        json.dumps({"access_token": "x", "token_type": "Bearer"}),
    )
    result = cli("import", "--from", "mcp-remote", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"mcp-token-broker: warning: {broken} is not a JSON file mcp-remote wrote\n"
    assert "pass --url URL" in result.stdout


def test_codex_rewrite_escapes_del_as_the_snippet_does(tmp_path):
    home = tmp_path / "home"
    path = write(home / ".codex" / "config.toml", '[mcp_servers.docs]\nurl = "https://docs.example/mcp"\n')
    picked = scan(home, system="linux", env={}).servers[0]
    rewrite(picked, "docs", command="/opt/odd\x7fdir/mcp-token-broker")
    assert tomllib.loads(path.read_text())["mcp_servers"]["docs"]["command"] == "/opt/odd\x7fdir/mcp-token-broker"
    assert "\\u007f" in path.read_text()
