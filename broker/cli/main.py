"""`mcp-token-broker`: the headless command line.

Every failure is one line on stderr and a non-zero exit status, the one
`broker.codes` gives the error's code (2 usage, 3 local storage, 4 login
flow, 5 remote server, ...; the service's errors arrive as `ServiceError`s
with its code); never a traceback unless MCP_TOKEN_BROKER_DEBUG=1.

Heavy modules (httpx, keyring, cryptography) are imported inside the
commands, so `--help` and `--version` stay fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..timeleft import expiry

if TYPE_CHECKING:
    from ..driver.engine import ConnectMode, Engine, FlowEvent

__all__ = ["main", "build_parser"]

PROG = "mcp-token-broker"
DEBUG_ENV = "MCP_TOKEN_BROKER_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Connect once to OAuth-protected MCP servers and keep their tokens encrypted, fresh and at hand.",
        epilog="Start with: mcp-token-broker add NAME URL, then mcp-token-broker connect NAME.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--key-file",
        metavar="PATH",
        help="keep the vault key in this 0600 file instead of the OS keyring "
        "(also MCP_TOKEN_BROKER_KEY_FILE); less safe, for machines without a Secret Service",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol steps to stderr (never secrets)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do (COMMAND --help for more)")
    sub.required = True

    p = _command(sub, "add", "add an MCP server and show what discovery found")
    p.add_argument("name", help="a short name: a-z, 0-9, '.', '_', '-'")
    p.add_argument("url", help="the MCP server URL, e.g. https://mcp.example.com/mcp")
    p.add_argument("--scope", action="append", default=[], metavar="S", help="a scope to request (repeatable)")
    p.add_argument("--client-id", metavar="ID", help="a client id you registered with the provider")
    p.add_argument("--client-secret-stdin", action="store_true", help="read that client's secret from standard input")
    p.add_argument(
        "--client-metadata-url", metavar="URL", help="your https client ID metadata document, if you host one"
    )
    p.add_argument(
        "--redirect-port", type=int, metavar="N", help="a fixed loopback redirect port (pre-registered clients)"
    )
    p.add_argument("--redirect-path", default="/callback", metavar="PATH", help="the redirect path (default /callback)")
    p.add_argument(
        "--no-resource",
        action="store_true",
        help="leave out the RFC 8707 resource parameter, for servers that reject it",
    )

    p = _command(sub, "connect", "log in (browser, or another device with --device)")
    p.add_argument("name", help=NAME_HELP)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-browser", action="store_true", help="print the login URL instead of opening a browser")
    mode.add_argument(
        "--paste", action="store_true", help="print the URL, then paste back the address the browser ended on"
    )
    mode.add_argument(
        "--device",
        action="store_true",
        help="log in on another device: print a URL and a code to enter there (RFC 8628; the default over SSH)",
    )
    mode.add_argument("--browser", action="store_true", help="the browser login, even over SSH")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="give up after this long (300)")

    p = _command(sub, "list", "list connections with status, scopes and expiry")
    p.add_argument("--json", action="store_true", help='print {"connections": [...]}')

    p = _command(sub, "show", "show one connection in full (never a secret)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--json", action="store_true", help="print the connection as one JSON object")

    for command, summary in (
        ("token", "print a current access token (refreshed first if needed)"),
        ("headers", "print the Authorization header as JSON (headersHelper)"),
    ):
        p = _command(sub, command, summary)
        p.add_argument("name", help=NAME_HELP)
        p.add_argument(
            "--min-ttl", type=int, default=None, metavar="SECONDS", help="refresh first if the token expires sooner"
        )

    p = _command(sub, "disconnect", "revoke the tokens at the server and forget them")
    p.add_argument("name", help=NAME_HELP)

    p = _command(sub, "remove", "forget a connection (revoking its tokens first)")
    p.add_argument("name", help=NAME_HELP)

    p = _command(sub, "proxy", "serve a connection to stdio-only MCP clients")
    p.add_argument("name", help=NAME_HELP)

    p = _command(sub, "test", "check that the MCP server answers (initialize, tools/list)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--json", action="store_true", help="print the result (or the failure) as one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="give up after this long (30)")

    from .snippets import CLIENTS

    p = _command(sub, "config", "print the config that points an MCP client at the broker")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument(
        "--client",
        choices=tuple(CLIENTS),
        default="claude-code",
        help="the MCP client to configure (default claude-code); docs/clients.md says where each snippet goes",
    )

    # Declared here: import_cmd pulls in the config readers, tomllib and the
    # adoption code, which only `import` itself needs (loaded in cmd_import).
    p = _command(sub, "import", "bring in servers from other MCP clients and mcp-remote")
    p.add_argument(
        "--from",
        dest="source",
        choices=("clients", "mcp-remote"),
        default="clients",
        help="clients: servers in Claude Desktop/Code, Cursor, VS Code, Codex configs (default); "
        "mcp-remote: its stored tokens in ~/.mcp-auth",
    )
    p.add_argument("--all", action="store_true", help="import everything found, without asking")
    p.add_argument("--pick", nargs="+", default=[], metavar="NAME", help="import these (a name, or CLIENT:ENTRY)")
    p.add_argument("--rewrite", action="store_true", help="also point each picked client entry at the broker")
    p.add_argument(
        "--delete-plaintext", action="store_true", help="(mcp-remote) delete its token files once in the vault"
    )
    p.add_argument("--url", action="append", default=[], metavar="URL", help="(mcp-remote) a server URL it used")
    p.add_argument("--dry-run", action="store_true", help="show what would be done, change nothing")
    p.add_argument("--json", action="store_true", help="print what was found and done as one JSON object")

    p = _command(sub, "gui", "open the desktop app (runs the service inside it)")
    # Declared here, not passed through as a REMAINDER: argparse hands options
    # that lead a REMAINDER to the parent parser, which refuses them.
    p.add_argument("--minimized", action="store_true", help="start in the tray (as at login)")
    p.add_argument("--policy", choices=("ask", "allow", "deny"), help="override the client policy for this run")

    p = _command(sub, "serve", "run the broker service in the foreground (headless)")
    p.add_argument(
        "--policy",
        choices=("ask", "allow", "deny"),
        help="what to do when a client without a grant asks for a token (default: the config file's "
        "client_policy, else allow)",
    )
    p.add_argument("--approval-timeout", type=float, default=60.0, metavar="SECONDS", help="how long `ask` waits (60)")
    p.add_argument(
        "--max-proxy-sessions",
        type=_at_least_one,
        metavar="N",
        # proxy_session.MAX_SESSIONS, not imported: it loads httpx (tests/test_proxy_cap.py checks the number)
        help="host at most N `proxy` sessions at once; another is refused with an error (128)",
    )

    p = _command(sub, "audit", "show who got which token, and who was refused")
    p.add_argument("--json", action="store_true", help="every entry, one JSON object per line (never folded)")
    p.add_argument("--raw", action="store_true", help="every entry on its own line, repeats not folded")
    p.add_argument("--connection", metavar="NAME", help="only this connection")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="the last N lines (50; 0 for all)")

    p = _command(sub, "grants", "list or revoke which clients may have which tokens")
    p.add_argument("--json", action="store_true", help='print {"grants": [...]}')
    gsub = p.add_subparsers(dest="grants_command", metavar="ACTION", help="what to do (default: list the grants)")
    r = _command(gsub, "revoke", "revoke a grant by its id")
    r.add_argument("grant_id", help="the grant's id, as `grants` lists it")

    p = _command(sub, "approvals", "list token requests waiting for a decision (policy ask)")
    p.add_argument("--json", action="store_true", help='print {"approvals": [...]}')
    p = _command(sub, "approve", "answer a waiting token request with its one-time code")
    p.add_argument("approval_id", help="the request's id, as `approvals` lists it")
    p.add_argument(
        "decision",
        choices=("allow_session", "allow_always", "deny_session", "deny_always"),
        help="allow or deny, until the broker stops (session) or for good (always)",
    )
    p.add_argument(
        "--code", metavar="CODE", help="the code from the serve terminal or notification (else read from the terminal)"
    )
    return parser


NAME_HELP = "the connection's name (as `list` shows it)"


def _at_least_one(text: str) -> int:
    """argparse's type for a count that must be 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary is both its line in `--help` and
    the description atop its own `--help`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary)
    return parser


# -- plumbing -----------------------------------------------------------------


def _engine(args: argparse.Namespace, *, flow_timeout: float = 300.0) -> Engine:
    """The direct path (no service runs): an engine from the composition root.
    It neither serves nor refreshes, so it does not read config.json."""
    from ..compose import build_engine, resolve

    return build_engine(resolve(key_file=args.key_file, read_config=False), flow_timeout=flow_timeout)


async def _with_engine(args: argparse.Namespace, fn: Any, **kw: Any) -> Any:
    engine = _engine(args, **kw)
    try:
        return await fn(engine)
    finally:
        await engine.transport.aclose()


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _read_line_in_thread() -> asyncio.Future[str]:
    """stdin.readline in a daemon thread, so a pending read never blocks exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()

    def run() -> None:
        line = sys.stdin.readline()

        def deliver() -> None:
            if not fut.done():
                fut.set_result(line)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=run, name="read-paste", daemon=True).start()
    return fut


def _service() -> Any:
    """A client of the running service, or None when none runs."""
    from ..client.api_client import BrokerClient

    client = BrokerClient()
    return client if client.is_running() else None


def _require_service() -> Any:
    from ..client.wire import NO_SERVICE
    from ..errors import ServiceUnavailable

    service = _service()
    if service is None:
        raise ServiceUnavailable(NO_SERVICE)
    return service


def _call(client: Any, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """One request to the service. Its errors are `ServiceError`s, which `main`
    reports like any `BrokerError`: the exit status comes from their code."""
    return client.request(method, path, body, **kw)


# -- commands -----------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    from ..secret import Secret

    secret = None
    if args.client_secret_stdin:
        if not args.client_id:
            _err("--client-secret-stdin needs --client-id")
            return 2
        line = sys.stdin.readline().strip()
        if not line:
            _err("no client secret on standard input")
            return 2
        secret = Secret(line)

    async def run(engine: Engine) -> Any:
        return await engine.add(
            args.name,
            args.url,
            scopes=tuple(args.scope),
            client_id=args.client_id,
            client_secret=secret,
            client_metadata_url=args.client_metadata_url,
            redirect_port=args.redirect_port,
            redirect_path=args.redirect_path,
            use_resource=not args.no_resource,
        )

    service = _service()
    if service is not None:
        from ..model import ConnectionSettings

        answer = _call(
            service,
            "POST",
            "/v1/connections",
            {
                "name": args.name,
                "server_url": args.url,
                "scopes": list(args.scope),
                "client_id": args.client_id,
                "client_secret": secret.reveal() if secret else None,
                "client_metadata_url": args.client_metadata_url,
                "redirect_port": args.redirect_port,
                "redirect_path": args.redirect_path,
                "use_resource": not args.no_resource,
            },
            timeout=120,
        )
        settings = ConnectionSettings.from_json(args.name, answer["settings"])
    else:
        settings = asyncio.run(_with_engine(args, run))
    d = settings.discovered
    assert d is not None
    methods = {
        "preregistered": "pre-registered client id",
        "metadata_document": "client ID metadata document",
        "dynamic": "dynamic client registration (RFC 7591)",
    }
    offered = " ".join(d.scopes_offered) if d.scopes_offered else "(not listed)"
    print(f"Added {settings.name} ({settings.server_url})")
    print(f"  authorization server: {d.issuer}")
    print(f"  scopes offered:       {offered}")
    print(f"  will request:         {' '.join(d.scopes) or '(server default)'}")
    print(f"  registration:         {methods.get(d.registration_method, d.registration_method)}")
    print(f"  resource indicator:   {d.resource if settings.use_resource else 'not sent (--no-resource)'}")
    print(f"Next: {PROG} connect {settings.name}")
    return 0


#: The longest a single poll of a login flow waits on the service (seconds).
POLL_WAIT = 20


def _connect_via_service(service: Any, name: str, mode: str, on_event: Any, timeout: float) -> Any:
    """Start the login inside the service and follow its progress."""
    from ..client.api_client import quote
    from ..driver.engine import FlowEvent

    flow = _call(service, "POST", f"/v1/connections/{quote(name)}/connect", {"mode": mode})
    flow_id = flow["flow_id"]
    after = 0
    deadline = time.monotonic() + timeout
    pasting = False
    try:
        while True:
            # Each long-poll ends by the deadline (whole seconds, the API's unit:
            # at most a second late), so --timeout holds, not the poll's 20 s.
            wait = min(POLL_WAIT, math.ceil(max(0.0, deadline - time.monotonic())))
            state = _call(service, "GET", f"/v1/flows/{flow_id}?after={after}&wait={wait}", timeout=wait + 20)
            for event in state["events"]:
                on_event(
                    FlowEvent(
                        event["stage"],
                        event["message"],
                        event.get("url"),
                        user_code=event.get("user_code"),
                        url_complete=event.get("url_complete"),
                        expires_at=event.get("expires_at"),
                    )
                )
                if mode == "paste" and event["stage"] == "waiting_for_browser" and not pasting:
                    pasting = True
                    _paste_in_background(service, flow_id)
            after = state["next"]
            if state["done"]:
                break
            if time.monotonic() >= deadline:
                _call(service, "DELETE", f"/v1/flows/{flow_id}")
                from ..errors import FlowTimeout

                raise FlowTimeout(f"no answer from the browser within {timeout:g} s")
    except KeyboardInterrupt:
        _call(service, "DELETE", f"/v1/flows/{flow_id}")
        raise
    if state["error"]:
        from ..errors import ServiceError

        raise ServiceError(0, state["error"]["error"], state["error"]["message"])
    return _call(service, "GET", f"/v1/connections/{quote(name)}")


def _paste_in_background(service: Any, flow_id: str) -> None:
    from ..errors import BrokerError

    def run() -> None:
        while True:
            line = sys.stdin.readline()
            if not line:
                return
            if line.strip():
                try:
                    _call(service, "POST", f"/v1/flows/{flow_id}/paste", {"url": line.strip()})
                except (BrokerError, OSError):
                    return

    threading.Thread(target=run, name="paste", daemon=True).start()


def _over_ssh_without_display(environ: Any) -> bool:
    """An SSH session with no display to open a browser on."""
    ssh = environ.get("SSH_CONNECTION") or environ.get("SSH_TTY")
    return bool(ssh) and not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _view(service: Any, args: argparse.Namespace, *, full: bool = False) -> dict[str, Any]:
    """`args.name`'s view: from the running service, else from the files."""
    from ..client.api_client import quote

    if service is not None:
        detail = "?detail=full" if full else ""
        return dict(_call(service, "GET", f"/v1/connections/{quote(args.name)}{detail}"))
    engine = _engine(args)
    try:
        return dict(engine.show(args.name))
    finally:
        asyncio.run(engine.transport.aclose())


def _offers_device_login(service: Any, args: argparse.Namespace) -> bool:
    """Whether the connection's authorization server advertised device login
    when last discovered (`add` or the last `connect`)."""
    view = _view(service, args, full=True)
    server = view.get("authorization_server") or {}
    return bool(server.get("device_authorization_endpoint"))


def _print_device_code(event: FlowEvent) -> None:
    """The URL, host first, and the code, for a person to carry to another device."""
    from urllib.parse import urlsplit

    host = urlsplit(event.url or "").hostname or "the authorization server"
    _err(f"to log in, open this URL on any device (a phone will do); it is at {host}:")
    print(f"\n  {event.url}\n", file=sys.stderr, flush=True)
    _err("and enter the code:")
    print(f"\n  {event.user_code}\n", file=sys.stderr, flush=True)
    if event.url_complete:
        _err(f"(or open {event.url_complete}, which carries the code)")
    if event.expires_at:
        _err(f"the code expires in {max(0, round((event.expires_at - time.time()) / 60))} min; waiting…")


def cmd_connect(args: argparse.Namespace) -> int:
    mode: ConnectMode = (
        "device" if args.device else "paste" if args.paste else "no-browser" if args.no_browser else "browser"
    )
    service = _service()
    chosen = args.device or args.paste or args.no_browser or args.browser
    if not chosen and _over_ssh_without_display(os.environ) and _offers_device_login(service, args):
        _err("no display in this SSH session: logging in on another device (use --browser for the browser login)")
        mode = "device"

    def on_event(event: FlowEvent) -> None:
        if event.stage == "waiting_for_device":
            _print_device_code(event)
        elif event.stage == "slow_down":
            _err(event.message)
        elif event.stage == "waiting_for_browser":
            if mode == "browser":
                _err("opening your browser to log in; if it does not open, visit:")
            elif mode == "no-browser":
                _err("open this URL in a browser on this machine to log in:")
            else:
                _err("open this URL in any browser and log in:")
            print(f"\n  {event.url}\n", file=sys.stderr, flush=True)
            if mode == "paste":
                _err("then paste the full address the browser ended on (it may show an error page) and press Enter:")
        elif event.stage == "paste_rejected":
            _err(f"warning: {event.message}")
        elif event.stage == "browser_failed":
            _err("no browser could be started; open the URL above yourself")
        elif event.stage in ("registering", "exchanging"):
            _err(event.message)

    async def read_pasted() -> str:
        return await _read_line_in_thread()

    async def run(engine: Engine) -> Any:
        _say_step_up(engine.show(args.name))
        return await engine.connect(args.name, mode=mode, on_event=on_event, read_pasted_url=read_pasted)

    if service is not None:
        from ..client.api_client import quote

        _say_step_up(_call(service, "GET", f"/v1/connections/{quote(args.name)}"))
        view = _connect_via_service(service, args.name, mode, on_event, args.timeout)
    else:
        view = asyncio.run(_with_engine(args, run, flow_timeout=args.timeout))
    print(
        f"Connected {view['name']}: scopes {' '.join(view['scopes']) or '(none)'}, "
        f"{expiry(view['expires_at'], time.time())}"
    )
    return 0


def _say_step_up(view: dict[str, Any]) -> None:
    """Before a login that a server's scope challenge widened: what it asks for."""
    step_up = view.get("step_up")
    if step_up and step_up.get("pending"):
        _err(f"asking for {' '.join(step_up['request'])}: will also ask for {' '.join(step_up['missing'])}")


def _step_up_words(view: dict[str, Any]) -> str | None:
    step_up = view.get("step_up")
    if not step_up:
        return None
    missing = " ".join(step_up.get("missing") or ())
    return f"needs more access ({missing})" if step_up.get("pending") else f"not granted by the server ({missing})"


def cmd_list(args: argparse.Namespace) -> int:
    service = _service()
    if service is not None:
        answer = _call(service, "GET", "/v1/connections")
        rows, orphans = answer["connections"], answer.get("orphaned", [])
    else:
        engine = _engine(args)
        rows, orphans = engine.list(), engine.orphans()
        asyncio.run(engine.transport.aclose())
    if args.json:
        print(json.dumps({"connections": rows, "orphaned": orphans} if orphans else {"connections": rows}, indent=2))
        return 0
    if not rows and not orphans:
        print(f"No connections yet. Add one with: {PROG} add NAME URL")
        return 0
    now = time.time()
    table = [("NAME", "STATUS", "TOKEN", "SCOPES", "SERVER")]
    for r in rows:
        table.append(
            (
                r["name"],
                _status_words(r["status"]) + (f", {_step_up_words(r)}" if _step_up_words(r) else ""),
                expiry(r["expires_at"], now) if r["expires_at"] or r["status"] != "not_connected" else "-",
                " ".join(r["scopes"]) or "-",
                r["server_url"],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    if rows:
        for row in table:
            print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for orphan in orphans:  # kept in the vault, never served; see broker.storage.store
        print(f"{orphan['name']}: {orphan['message']}")
    return 0


#: A status as `list` and `show` print it; `--json` keeps the API's word.
STATUS_WORDS = {
    "not_connected": "not connected",
    "connected": "connected",
    "expired": "expired",
    "reauth_required": "needs connect again",
}


def _status_words(status: str) -> str:
    return STATUS_WORDS.get(status, status.replace("_", " "))


def cmd_show(args: argparse.Namespace) -> int:
    view = _view(_service(), args, full=True)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    if view["status"] == "orphaned":
        print(f"name    {view['name']}\nstatus  {view['message']}")
        if view["server_url"]:
            print(f"server  {view['server_url']} (from the vault)")
        return 0
    now = time.time()
    reg = view["registration"]
    lines = [
        ("name", view["name"]),
        ("server", view["server_url"]),
        ("status", _status_words(view["status"]) + (f", {_step_up_words(view)}" if _step_up_words(view) else "")),
        ("issuer", view["issuer"] or "-"),
        ("resource", view["resource"] if view["send_resource"] else f"{view['resource']} (not sent)"),
        ("requested scopes", " ".join(view["requested_scopes"]) or "-"),
        ("granted scopes", " ".join(view["scopes"]) or "-"),
        ("access token", expiry(view["expires_at"], now) if view["expires_at"] else "-"),
        ("refresh token", "yes" if view["has_refresh_token"] else "no"),
        ("registration", reg["method"] or "-"),
        ("client id", reg["client_id"] or "-"),
        ("redirect uri", reg["redirect_uri"] or "-"),
    ]
    if view["last_error"]:
        lines.append(("last error", view["last_error"]))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    marks = {"pass": "ok  ", "warn": "warn", "fail": "FAIL", "unknown": "?   "}
    if view.get("security"):
        print("security check")
        for item in view["security"]:
            print(f"  [{marks[item['verdict']]}] {item['label']}: {item['detail']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .snippets import snippet

    view = _view(_service(), args)
    print(snippet(args.client, view["name"], view["server_url"]))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .import_cmd import run_import

    return run_import(args, _service(), _engine)


def cmd_token(args: argparse.Namespace) -> int:
    from ..client.fastpath import run
    from ..model import check_name

    check_name(args.name)
    argv = [args.command, args.name]
    if args.min_ttl is not None:
        argv += ["--min-ttl", str(args.min_ttl)]
    return run(argv, verbose=args.verbose) or 0  # -v: say "waiting for approval" even into a pipe


cmd_headers = cmd_token


def _change(args: argparse.Namespace, method: str, path: str, engine_call: Any, done: str) -> int:
    """Disconnect/remove: through the service when one runs, else directly."""
    service = _service()
    if service is not None:
        warning = _call(service, method, path, timeout=120)["warning"]
    else:

        async def run(engine: Engine) -> Any:
            return await engine_call(engine)

        warning = asyncio.run(_with_engine(args, run))
    if warning:
        _err(f"warning: {warning}")
    print(f"{done} {args.name}")
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from ..client.api_client import quote

    path = f"/v1/connections/{quote(args.name)}/disconnect"

    async def revoke(engine: Engine) -> str | None:
        return (await engine.disconnect(args.name)).message(time.time())

    # A refused revocation is a warning line, and the exit status stays 0: the
    # broker no longer holds or hands out the tokens, which is what the
    # command promises, and it has nothing left to retry with.
    return _change(args, "POST", path, revoke, "Disconnected")


def cmd_remove(args: argparse.Namespace) -> int:
    from ..client.api_client import quote

    path = f"/v1/connections/{quote(args.name)}"
    return _change(args, "DELETE", path, lambda e: e.remove(args.name), "Removed")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..client.socketdir import prepare_socket_dir
    from ..compose import build_service, resolve
    from ..service import eventloop
    from ..service.hardening import harden_process

    harden_process()
    setup = resolve(key_file=args.key_file, policy=args.policy)
    prepare_socket_dir(setup.socket_path, setup.socket_base)  # before anything (the instance lock) goes in there
    service = build_service(setup, approval_timeout=args.approval_timeout, max_proxy_sessions=args.max_proxy_sessions)

    def started() -> None:
        _err(f"serving on {service.api.socket_path} (client policy: {setup.policy}); Ctrl-C stops")

    eventloop.run(service.run(on_started=started))
    _err("stopped")
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    # `proxy NAME` alone does not come here: the launcher calls the same function directly.
    from ..client.proxy import main as proxy_main

    return proxy_main(args.name)


def cmd_test(args: argparse.Namespace) -> int:
    import anyio

    from ..client.api_client import quote
    from ..client.probe import failure_json, probe
    from ..errors import BrokerError

    if not args.verbose:  # the SDK logs parse failures with a traceback; the failure is our one line
        logging.getLogger("mcp").setLevel(logging.CRITICAL)
    try:
        service = _require_service()
        view = _call(service, "GET", f"/v1/connections/{quote(args.name)}")
        result = anyio.run(lambda: probe(args.name, view["server_url"], tokens=service, timeout=args.timeout))
    except BrokerError as exc:
        if args.json:
            print(json.dumps(failure_json(args.name, exc)))
        _err(f"test {args.name} failed: {exc}")
        return exc.exit_code
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{args.name}: OK, the MCP server answers with the broker's token")
    print(f"  server      {result.server()}")
    print(f"  protocol    {result.protocol_version}")
    print(f"  tools       {result.tools}")
    print(f"  round trip  {result.round_trip_ms:.0f} ms (tools/list; initialize took {result.initialize_ms:.0f} ms)")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    # Exec the ui package instead of importing it: broker never imports Qt.
    import importlib.util

    if importlib.util.find_spec("PySide6") is None:
        _err("the desktop app needs PySide6: pip install 'mcp-token-broker[gui]'")
        return 2
    from ..compose import KEY_FILE_ENV

    env = dict(os.environ)
    if args.key_file:  # the app takes it from the environment, as broker.compose reads it
        env[KEY_FILE_ENV] = args.key_file
    gui_args = ["--minimized"] if args.minimized else []
    if args.policy:
        gui_args += ["--policy", args.policy]
    if getattr(sys, "frozen", False):
        # The installer's bundle is one executable: its entry (packaging/entry.py)
        # runs the app in process for `gui`, so exec it with that first.
        os.execve(sys.executable, [sys.executable, "gui", *gui_args], env)
    os.execve(sys.executable, [sys.executable, "-m", "ui", *gui_args], env)


def cmd_audit(args: argparse.Namespace) -> int:
    from ..service.audit import read_audit
    from ..storage.paths import Paths

    paths = Paths.default()
    raw = args.json or args.raw
    # Folded lines are counted after folding: read every entry, then keep the last N lines.
    limit = args.limit or None
    entries = read_audit(paths.state_dir / "audit.log", connection=args.connection, limit=limit if raw else None)
    if args.connection and not entries:
        from ..errors import UnknownConnection
        from ..model import check_name
        from ..storage.store import Store

        check_name(args.connection)
        # The log outlives a removed connection: only a name neither knows is a mistake.
        if args.connection not in Store(paths, None).load_settings():
            raise UnknownConnection(args.connection)
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
        return 0
    if not entries:
        print("No token has been handed out or refused yet.")
        return 0
    if not raw:
        from ..service.activity import describe, fold

        # One line per client, connection, outcome and minute: a busy proxy does not bury the rest.
        for item in fold(entries)[-limit if limit else 0 :]:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.last))}  {describe(item)}")
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("time", 0)))
        detail = f" ({e['detail']})" if e.get("detail") else ""
        print(
            f"{when}  {e.get('outcome', '?'):<7} {e.get('connection', '?'):<20} {e.get('client', '?')}"
            f" [pid {e.get('pid')}]{detail}"
        )
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    service = _service()
    if args.grants_command == "revoke":
        if service is not None:
            _call(service, "DELETE", f"/v1/grants/{args.grant_id}")
        else:
            from ..service.grants import Grants
            from ..storage.paths import Paths

            if Grants(Paths.default().config_dir / "grants.json").revoke(args.grant_id) is None:
                _err(f"no grant {args.grant_id!r}")
                return 2
        print(f"Revoked {args.grant_id}")
        return 0
    if service is not None:
        grants = _call(service, "GET", "/v1/grants")["grants"]
    else:
        from ..service.grants import Grants
        from ..storage.paths import Paths

        grants = [g.to_json() for g in Grants(Paths.default().config_dir / "grants.json").list()]
    if args.json:
        print(json.dumps({"grants": grants}, indent=2))
        return 0
    if not grants:
        print("No grants. Clients get tokens by the service's policy.")
        return 0
    from ..service.grants import scope_words

    for g in grants:
        verdict = "allow" if g["allow"] else "deny"
        print(f"{g['id']}  {verdict:<5} {scope_words(g['scope']):<22} {g['connection']:<20} {g['client_name']}")
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    service = _require_service()
    pending = _call(service, "GET", "/v1/approvals")["approvals"]
    if args.json:
        print(json.dumps({"approvals": pending}, indent=2))
    elif not pending:
        print("Nothing is waiting for a decision.")
    for a in pending if not args.json else ():
        print(f"{a['id']}  {a['connection']:<20} {a['client']['name']} (pid {a['client']['pid']})")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    service = _require_service()
    code = args.code
    if code is None:
        # Typed, not in argv: other processes can read a command line.
        if sys.stdin.isatty():
            sys.stderr.write("Code shown where the broker runs (its terminal or a notification): ")
            sys.stderr.flush()
        code = sys.stdin.readline().strip()
    _call(service, "POST", f"/v1/approvals/{args.approval_id}", {"decision": args.decision, "code": code})
    print(f"Answered {args.approval_id}: {args.decision}")
    return 0


COMMANDS = {
    "add": cmd_add,
    "connect": cmd_connect,
    "list": cmd_list,
    "show": cmd_show,
    "token": cmd_token,
    "disconnect": cmd_disconnect,
    "remove": cmd_remove,
    "headers": cmd_headers,
    "serve": cmd_serve,
    "proxy": cmd_proxy,
    "test": cmd_test,
    "config": cmd_config,
    "import": cmd_import,
    "gui": cmd_gui,
    "audit": cmd_audit,
    "grants": cmd_grants,
    "approvals": cmd_approvals,
    "approve": cmd_approve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines show full URLs
    from ..errors import BrokerError

    try:
        return COMMANDS[args.command](args)
    except BrokerError as exc:  # the service's errors too (ServiceError)
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("cancelled")
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        _err(f"internal error ({type(exc).__name__}); rerun with {DEBUG_ENV}=1 for details")
        return 1
