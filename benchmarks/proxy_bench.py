#!/usr/bin/env python3
"""Our stdio proxy against mcp-remote, side by side, in one run.

Both run as stdio MCP servers in front of the same OAuth-protected MCP server
(tests/servers/mcp_server.py, tokens from the test oidc-provider), both with a
valid token:

- ours: `.venv/bin/mcp-token-broker proxy bench`, against a real `serve` that
  holds a connection made by a real `connect` (the browser helper of the
  tests logs in);
- mcp-remote (npm, benchmarks/peers): `node .../mcp-remote/dist/proxy.js URL
  --header "Authorization:Bearer TOKEN" --transport http-only --allow-http`,
  with its config dir in the temp dir.

Each round measures, interleaved (the order alternates between rounds):

1. start-up: from `Popen` to the answer to `initialize` (the client writes
   `initialize` at once, as Claude Code and the SDKs do), on raw pipes;
2. per-call overhead: one official Python SDK `Client` through each proxy
   (`stdio_client`) and one straight to the server (`streamable_http_client`
   with the bearer header) call `echo` in turn, call after call; the extra
   time of a proxy is its median minus the direct median of the same round;
3. memory: VmRSS of each proxy's process tree after those calls (1,000 each);
   ours runs its session in `serve`, so the broker's VmRSS growth over the
   session is added to the proxy process's own (both are printed). The
   broker's first session imports the SDK (once per broker): that start-up
   and that growth are printed apart, before the rounds.

Then the medians over the rounds, the spread (min-max) and the ratios, with
PASS/MISS against the target: ours at or below mcp-remote on all three.

Usage (from the repository root):

    .venv/bin/python benchmarks/proxy_bench.py             # 5 rounds, about 3 minutes
    .venv/bin/python benchmarks/proxy_bench.py --quick     # 2 rounds, 200 calls
    .venv/bin/python benchmarks/proxy_bench.py --pin       # servers on CPU 0; clients, proxies and serve on CPU 1

mcp-remote is installed into benchmarks/peers (`npm ci`) on the first run.
Exit status: 0 when the run completed (a MISS is a result), 1 when something broke.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEERS = ROOT / "benchmarks" / "peers"
MCP_REMOTE = PEERS / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
CONNECTION = "bench"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}


class BenchError(Exception):
    """Something broke: the run is not a valid measurement."""


# -- processes ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _rss_kib(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the process tree (its live members)."""
    ticks = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Stack:
    """oidc-provider, the MCP server, a `serve` and a connected connection, in a temp dir."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
        self.exe = str(ROOT / ".venv" / "bin" / "mcp-token-broker")
        self.serve: subprocess.Popen[bytes] | None = None
        self._stack = None

    def start(self) -> None:
        from tests.servers.fixtures import BROWSER_SCRIPT, running_stack

        self._stack = running_stack(access_ttl=86400)
        _oidc, mcp = self._stack.__enter__()
        self.url = mcp.url
        dirs = {}
        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
            d = self.tmp / var.lower()
            d.mkdir(mode=0o700)
            dirs[var] = str(d)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_TOKEN_BROKER_", "XDG_", "MCP_REMOTE_"))}
        env.update(dirs)
        env["MCP_TOKEN_BROKER_KEY_FILE"] = str(self.tmp / "vault.key")
        env["MCP_REMOTE_CONFIG_DIR"] = str(self.tmp / "mcp-auth")
        env["BROWSER"] = BROWSER_SCRIPT
        env["BROWSER_LOG"] = str(self.tmp / "browser.log")
        # Run from cached bytecode, as an installed broker does (see socket_bench.py).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        self.env = env
        log = open(self.tmp / "serve.log", "wb")
        self.serve = subprocess.Popen([self.exe, "serve"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        from broker.client.api_client import BrokerClient

        self.client = BrokerClient(os.path.join(dirs["XDG_RUNTIME_DIR"], "mcp-token-broker", "broker.sock"), timeout=5)
        deadline = time.monotonic() + 30
        while not self.client.is_running():
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"serve did not start: {(self.tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.05)
        for argv in (("add", CONNECTION, self.url), ("connect", CONNECTION)):
            r = subprocess.run([self.exe, *argv], env=env, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
        self.token = str(self.client.token(CONNECTION)["access_token"])

    def stop(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.terminate()
            try:
                self.serve.wait(20)
            except subprocess.TimeoutExpired:
                self.serve.kill()
        if self._stack is not None:
            self._stack.__exit__(None, None, None)
        if self.args.keep_tmp:
            print(f"(kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def argv(self, which: str) -> list[str]:
        if which == "ours":
            return [self.exe, "proxy", CONNECTION]
        node = shutil.which("node") or "node"
        return [
            node,
            str(MCP_REMOTE),
            self.url,
            "--header",
            f"Authorization:Bearer {self.token}",
            "--transport",
            "http-only",
            "--allow-http",
        ]


# -- measurements -------------------------------------------------------------


def startup_ms(stack: Stack, which: str, taskset: list[str]) -> float:
    """Popen to the answer to `initialize`, the request written at once."""
    errlog = open(stack.tmp / f"{which}.stderr", "ab")
    line = (json.dumps(INITIALIZE) + "\n").encode()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*taskset, *stack.argv(which)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=stack.env
    )
    errlog.close()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(line)
        proc.stdin.flush()
        buf = b""
        deadline = time.monotonic() + 30
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise BenchError(f"{which}: no answer to initialize in 30 s")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise BenchError(f"{which}: stdout closed before the answer (see {which}.stderr)")
            buf += chunk
            if b"\n" in buf:
                elapsed = (time.perf_counter() - t0) * 1000
                answer = json.loads(buf.split(b"\n", 1)[0])
                if answer.get("id") != 1 or "result" not in answer:
                    raise BenchError(f"{which}: initialize answered {answer!r}")
                return elapsed
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


async def calls_round(
    stack: Stack, order: list[str], calls: int, warmup: int, taskset: list[str], errlogs: dict
) -> dict:
    """`calls` echo calls through each path, call after call; latencies (ms) and each proxy's VmRSS."""
    import httpx2
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    me = os.getpid()
    assert stack.serve is not None
    broker_before = _rss_kib(stack.serve.pid)
    lat: dict[str, list[float]] = {"direct": [], "ours": [], "mcp-remote": []}
    pids: dict[str, int] = {}
    async with AsyncExitStack() as es:
        clients = {}
        http = await es.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.token}"}, timeout=30)
        )
        clients["direct"] = await es.enter_async_context(Client(streamable_http_client(stack.url, http_client=http)))
        for which in order:
            argv = [*taskset, *stack.argv(which)]
            before = set(_children(me))
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=stack.env)
            clients[which] = await es.enter_async_context(Client(stdio_client(params, errlog=errlogs[which])))
            new = [p for p in _children(me) if p not in before]
            if len(new) != 1:
                raise BenchError(f"{which}: expected one new child process, found {new}")
            pids[which] = new[0]
        paths = ["direct", *order]
        # CPU per call: ours is the broker (which hosts the session) plus the thin proxy; theirs is node.
        cpu_of = {"ours": [stack.serve.pid, pids["ours"]], "mcp-remote": [pids["mcp-remote"]]}
        cpu0: dict[str, float] = {}
        for i in range(warmup + calls):
            if i == warmup:
                cpu0 = {w: sum(_cpu_seconds(p) for p in ps) for w, ps in cpu_of.items()}
            for which in paths:
                t0 = time.perf_counter()
                result = await clients[which].call_tool("echo", {"text": f"call {i}"})
                elapsed = (time.perf_counter() - t0) * 1000
                if result.is_error or f"call {i}" not in str(result.content):
                    raise BenchError(f"{which}: echo answered {result.content!r}")
                if i >= warmup:
                    lat[which].append(elapsed)
            # rotate who goes first, so no path always follows another
            paths.append(paths.pop(0))
        cpu = {w: (sum(_cpu_seconds(p) for p in ps) - cpu0[w]) / calls * 1e6 for w, ps in cpu_of.items()}
        rss = {which: _rss_kib(pid) for which, pid in pids.items()}
        # Ours runs in the broker: its growth over this session counts too.
        thin, growth = rss["ours"], _rss_kib(stack.serve.pid) - broker_before
        rss["ours"] = thin + growth
        cmd = {which: _cmdline(pid)[:60] for which, pid in pids.items()}
    return {"lat": lat, "rss": rss, "cmd": cmd, "thin": thin, "growth": growth, "cpu": cpu}


# -- the run --------------------------------------------------------------------


def _ensure_mcp_remote() -> None:
    if MCP_REMOTE.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is not on PATH; mcp-remote cannot be installed")
    print("installing mcp-remote into benchmarks/peers (npm ci)...", flush=True)
    r = subprocess.run([npm, "ci", "--prefix", str(PEERS), "--no-audit", "--no-fund", "--loglevel=error"])
    if r.returncode != 0 or not MCP_REMOTE.is_file():
        raise BenchError("npm ci in benchmarks/peers failed")


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def run(args: argparse.Namespace) -> int:
    import anyio

    _ensure_mcp_remote()
    rounds = args.rounds or (2 if args.quick else 5)
    calls = args.calls or (200 if args.quick else 1000)
    starts = args.starts or (2 if args.quick else 4)
    taskset: list[str] = []
    if args.pin:
        os.sched_setaffinity(0, {0})  # the stack inherits CPU 0
        taskset = ["taskset", "-c", "1"]
    stack = Stack(args)
    try:
        stack.start()
        if args.pin:
            os.sched_setaffinity(0, {1})  # this client, and the proxies through taskset, on CPU 1
            # Our proxy sessions run in the broker: it goes with the proxies, not the servers.
            assert stack.serve is not None
            for task in os.listdir(f"/proc/{stack.serve.pid}/task"):
                os.sched_setaffinity(int(task), {1})
        remote_version = json.loads((PEERS / "node_modules" / "mcp-remote" / "package.json").read_text())["version"]
        node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        print(f"server:     {stack.url} (tests/servers/mcp_server.py)")
        loop = stack.client.health().get("event_loop", "?")
        print(f"ours:       {stack.exe} proxy {CONNECTION}  (python {sys.version.split()[0]}, broker on {loop})")
        print(f"mcp-remote: {remote_version} on node {node_version}")
        print(f"rounds: {rounds}; per round {starts} start-ups each and {calls} calls each; pinned: {args.pin}")
        assert stack.serve is not None
        cold_rss = _rss_kib(stack.serve.pid)
        for which in ("ours", "mcp-remote"):  # warm the page cache and bytecode, not measured
            first = startup_ms(stack, which, taskset)
            if which == "ours":
                # The broker's first hosted session imports the SDK: once per broker, reported apart.
                print(f"ours, first session of this broker: start-up {first:.0f} ms", flush=True)
        sdk_mib = (_rss_kib(stack.serve.pid) - cold_rss) / 1024
        print(f"broker VmRSS: {cold_rss / 1024:.1f} MiB at start, +{sdk_mib:.1f} MiB after its first session")
        per_round: list[dict] = []
        for r in range(rounds):
            order = ["ours", "mcp-remote"] if r % 2 == 0 else ["mcp-remote", "ours"]
            st: dict[str, list[float]] = {"ours": [], "mcp-remote": []}
            for i in range(starts):
                for which in order if i % 2 == 0 else order[::-1]:
                    st[which].append(startup_ms(stack, which, taskset))
            errlogs = {w: open(stack.tmp / f"{w}.stderr", "a") for w in order}
            try:
                res = anyio.run(calls_round, stack, order, calls, args.warmup, taskset, errlogs)
            finally:
                for f in errlogs.values():
                    f.close()
            med = {w: statistics.median(v) for w, v in res["lat"].items()}
            row = {
                "start": {w: statistics.median(v) for w, v in st.items()},
                "call": med,
                "extra": {w: med[w] - med["direct"] for w in ("ours", "mcp-remote")},
                "rss": {w: res["rss"][w] / 1024 for w in ("ours", "mcp-remote")},
                "thin": res["thin"] / 1024,
                "growth": res["growth"] / 1024,
                "cpu": res["cpu"],
            }
            per_round.append(row)
            if args.verbose:
                for w, v in res["lat"].items():
                    q = statistics.quantiles(v, n=10)
                    print(f"  {w:<11} p10 {q[0]:.2f}  p50 {med[w]:.2f}  p90 {q[-1]:.2f}  max {max(v):.2f} ms")
            print(
                f"round {r + 1}: start-up {row['start']['ours']:.0f} | {row['start']['mcp-remote']:.0f} ms;"
                f" call direct {med['direct']:.2f}, ours +{row['extra']['ours']:.2f},"
                f" mcp-remote +{row['extra']['mcp-remote']:.2f} ms;"
                f" RSS {row['rss']['ours']:.1f} (proxy {row['thin']:.1f} + broker {row['growth']:+.1f})"
                f" | {row['rss']['mcp-remote']:.1f} MiB;"
                f" CPU/call {row['cpu']['ours']:.0f} | {row['cpu']['mcp-remote']:.0f} us",
                flush=True,
            )
        print()
        print(f"{'median over rounds (spread)':<32}{'ours':>20}{'mcp-remote':>20}{'ours/theirs':>13}")
        verdicts = []
        for key, label, unit in (
            ("start", "start-up to initialize", "ms"),
            ("extra", "tools/call extra vs direct", "ms"),
            ("rss", f"RSS after {calls} calls", "MiB"),
        ):
            ours = [row[key]["ours"] for row in per_round]
            theirs = [row[key]["mcp-remote"] for row in per_round]
            mo, mt = statistics.median(ours), statistics.median(theirs)
            ok = mo <= mt
            verdicts.append(ok)
            print(
                f"{label:<32}{f'{mo:.2f} {unit} ({_spread(ours)})':>20}{f'{mt:.2f} {unit} ({_spread(theirs)})':>20}"
                f"{mo / mt if mt else float('nan'):>12.2f}x  {'PASS' if ok else 'MISS'}"
            )
        ours_cpu = [row["cpu"]["ours"] for row in per_round]
        their_cpu = [row["cpu"]["mcp-remote"] for row in per_round]
        mo, mt = statistics.median(ours_cpu), statistics.median(their_cpu)
        print(
            f"{'CPU per call (not a target)':<32}{f'{mo:.0f} us ({min(ours_cpu):.0f}-{max(ours_cpu):.0f})':>20}"
            f"{f'{mt:.0f} us ({min(their_cpu):.0f}-{max(their_cpu):.0f})':>20}{mo / mt if mt else float('nan'):>12.2f}x"
        )
        direct = [row["call"]["direct"] for row in per_round]
        print(f"{'direct tools/call (SDK client)':<32}{f'{statistics.median(direct):.2f} ms ({_spread(direct)})':>20}")
        print(f"target (ours <= mcp-remote on all three): {'PASS' if all(verdicts) else 'MISS'}")
        return 0
    except BenchError as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 200 calls")
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--calls", type=int, default=0, help="measured calls per path per round (default 1000)")
    p.add_argument("--starts", type=int, default=0, help="start-ups per proxy per round (default 4)")
    p.add_argument("--warmup", type=int, default=20, help="calls per path before measuring")
    p.add_argument("--pin", action="store_true", help="servers on CPU 0; the client, the proxies and serve on CPU 1")
    p.add_argument("-v", "--verbose", action="store_true", help="each path's latency deciles per round")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (serve.log, each proxy's stderr)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
