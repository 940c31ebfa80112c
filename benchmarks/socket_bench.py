#!/usr/bin/env python3
"""Socket-API benchmark for the broker's token path.

One run measures, against a warm `mcp-token-broker serve` (no OAuth server:
the connection is written straight into the store with a day-long token and
no refresh token, so nothing is ever refreshed):

1. `GET /v1/connections/bench/token` sequentially on one keep-alive
   connection (p50/p99 latency, throughput) and on 50 concurrent keep-alive
   connections (throughput, p50/p99/max latency);
2. the same load against a floor: a bare asyncio Unix-socket server that
   answers every request with the broker's exact response bytes, in
   alternating rounds (broker, floor, broker, floor, ...);
3. the whole-process wall time of `mcp-token-broker token bench` against the
   same venv's `python -c pass`, alternating, plus what the editable
   install's import finder costs every interpreter start;
4. the targets, with PASS/MISS.

The load generator is a separate child process (this file, role `_load`): a
plain asyncio client on `asyncio.open_unix_connection` with hand-written
keep-alive GETs and Content-Length parsing. The floor is another child
(role `_floor`). Every loop is bounded by count and by time.

Usage (from the repository root):

    .venv/bin/python benchmarks/socket_bench.py            # full run, about a minute
    .venv/bin/python benchmarks/socket_bench.py --quick    # a few seconds

Exit status: 0 when the run completed (whatever PASS/MISS says: it is a
report), 1 when something broke (a non-200 answer, a process that would not
start, a failing CLI call).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN_PATH = "/v1/connections/bench/token"
CONNECTION = "bench"
TOKEN_LEN = 800

# Targets.
SEQ_P50_US = 300.0
SEQ_P99_US = 2000.0
CONC_RATE = 5000.0
CONC_FLOOR_SHARE = 0.2
CONC_MAX_MS = 100.0
CLI_RATIO = 3.0


class BenchError(Exception):
    """Something broke: the run is not a valid measurement."""


# ---------------------------------------------------------------------------
# Child role: the load generator
# ---------------------------------------------------------------------------


def _request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: broker\r\nAccept: application/json\r\n\r\n".encode("ascii")


async def _fetch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    """One keep-alive request; returns the body length. Raises on non-200."""
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    if head[9:12] != b"200":
        body = b""
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            body = await reader.readexactly(int(m.group(1)))
        raise BenchError(f"non-200 answer: {head[:40]!r} {body[:200]!r}")
    i = head.find(b"\r\nContent-Length:")
    if i < 0:  # header names are case-insensitive; fall back to a search
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m is None:
            raise BenchError(f"answer without Content-Length: {head!r}")
        n = int(m.group(1))
    else:
        n = int(head[i + 17 : head.index(b"\r\n", i + 2)])
    await reader.readexactly(n)
    return n


def _stats(lat_ns: list[int], elapsed: float) -> dict:
    lat_ns.sort()
    n = len(lat_ns)
    if n == 0:
        return {"n": 0, "elapsed": elapsed, "rate": 0.0, "p50_us": None, "p99_us": None, "max_us": None}

    def pct(p: float) -> float:
        # nearest rank
        k = max(0, min(n - 1, int(-(-p * n // 100)) - 1))
        return lat_ns[k] / 1000.0

    return {
        "n": n,
        "elapsed": elapsed,
        "rate": n / elapsed if elapsed > 0 else 0.0,
        "p50_us": pct(50),
        "p99_us": pct(99),
        "max_us": lat_ns[-1] / 1000.0,
        "mean_us": sum(lat_ns) / n / 1000.0,
    }


async def _load_seq(sock: str, req: bytes, cfg: dict) -> dict:
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        pc = time.perf_counter_ns
        # Warm-up on this very connection (identity lookup, caches).
        end = time.perf_counter() + cfg["warmup_duration"]
        for _ in range(cfg["warmup_count"]):
            await _fetch(reader, writer, req)
            if time.perf_counter() > end:
                break
        lat: list[int] = []
        append = lat.append
        count = cfg["count"]
        t0, c0 = time.perf_counter(), time.process_time()
        deadline_ns = pc() + int(cfg["duration"] * 1e9)
        for _ in range(count):
            s = pc()
            await _fetch(reader, writer, req)
            e = pc()
            append(e - s)
            if e > deadline_ns:
                break
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {**_stats(lat, elapsed), "client_cpu_us": cpu / max(1, len(lat)) * 1e6}
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _load_conc(sock: str, req: bytes, cfg: dict) -> dict:
    conns = []
    try:
        for _ in range(cfg["conns"]):
            conns.append(await asyncio.open_unix_connection(sock))

        async def warm(reader, writer):
            for _ in range(cfg["warmup_per_conn"]):
                await _fetch(reader, writer, req)

        await asyncio.wait_for(asyncio.gather(*(warm(r, w) for r, w in conns)), cfg["warmup_timeout"])

        pc = time.perf_counter_ns
        lat: list[int] = []
        append = lat.append
        left = [cfg["count"]]
        deadline_ns = pc() + int(cfg["duration"] * 1e9)

        async def worker(reader, writer):
            while left[0] > 0:
                left[0] -= 1
                s = pc()
                await _fetch(reader, writer, req)
                e = pc()
                append(e - s)
                if e > deadline_ns:
                    break

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.wait_for(
            asyncio.gather(*(worker(r, w) for r, w in conns)), cfg["duration"] + cfg["drain_timeout"]
        )
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {**_stats(lat, elapsed), "client_cpu_us": cpu / max(1, len(lat)) * 1e6}
    finally:
        for _, w in conns:
            w.close()
        for _, w in conns:
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass


def role_load(cfg: dict) -> int:
    # The client is not under test: keep its own pauses out of the figures.
    gc.disable()
    req = _request_bytes(cfg["path"])
    out: dict = {}
    try:
        if cfg.get("seq"):
            out["seq"] = asyncio.run(_load_seq(cfg["socket"], req, cfg["seq"]))
        if cfg.get("conc"):
            out["conc"] = asyncio.run(_load_conc(cfg["socket"], req, cfg["conc"]))
    except BenchError as exc:
        out["error"] = str(exc)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 1 if "error" in out else 0


# ---------------------------------------------------------------------------
# Child role: the floor server
# ---------------------------------------------------------------------------


def role_floor(sock_path: str, response_file: str) -> int:
    response = Path(response_file).read_bytes()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                n = buf.count(b"\r\n\r\n")  # GETs without bodies: one request per blank line
                if n:
                    buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
                    writer.write(response * n)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path=sock_path, backlog=1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------

SETUP_CODE = r"""
import sys, time
from pathlib import Path
from broker.storage.store import Store
from broker.storage.paths import Paths
from broker.storage.keystore import FileKeyStore
from broker.model import ConnectionSettings, ConnectionState
from broker.oauth.tokens import TokenSet
from broker.secret import Secret
key_path = Path(sys.argv[1]); name = sys.argv[2]; n = int(sys.argv[3])
store = Store(Paths.default(), lambda: FileKeyStore(key_path))
now = int(time.time())
with store.transaction() as txn:
    txn.settings[name] = ConnectionSettings(name=name, server_url="https://mcp.example.com/mcp", added_at=now)
    txn.states[name] = ConnectionState(tokens=TokenSet(
        access_token=Secret("x" * n), token_type="Bearer", expires_at=now + 86400,
        scope=("mcp:read",), refresh_token=None, obtained_at=now))
"""


def _raw_get(sock_path: str, path: str, timeout: float = 5.0) -> bytes:
    """One `Connection: close` GET; the whole raw answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)
    finally:
        s.close()


def _keepalive_get(sock_path: str, path: str, timeout: float = 5.0) -> bytes:
    """One keep-alive GET; the raw answer (head + Content-Length body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(_request_bytes(path))
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(65536)
            if not c:
                raise BenchError("connection closed before the answer's head")
            buf += c
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m is None:
            raise BenchError(f"answer without Content-Length: {head!r}")
        n = int(m.group(1))
        while len(body) < n:
            c = s.recv(65536)
            if not c:
                raise BenchError("connection closed mid-body")
            body += c
        return head + b"\r\n\r\n" + body[:n]
    finally:
        s.close()


def _wait_socket(sock_path: str, proc: subprocess.Popen, path: str | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args!r} exited with {proc.returncode} before serving")
        try:
            if path is None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(sock_path)
                finally:
                    s.close()
                return
            raw = _raw_get(sock_path, path, timeout=2.0)
            if raw.startswith(b"HTTP/1.1 200"):
                return
            last = raw[:200]
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise BenchError(f"{sock_path} did not answer within {timeout:.0f} s (last: {last!r})")


def _stop(proc: subprocess.Popen | None, name: str) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        print(f"  {name} did not stop on SIGTERM within 15 s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(5)
        return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.venv = Path(args.venv).resolve()
        self.py = str(self.venv / "bin" / "python")
        self.cli = str(self.venv / "bin" / "mcp-token-broker")
        self.tmp = Path(tempfile.mkdtemp(prefix="broker-bench-"))
        self.broker: subprocess.Popen | None = None
        self.floor: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.broker_sock = ""
        self.floor_sock = str(self.tmp / "floor.sock")
        self._cleaned = False
        self._broker_code: int | None = None
        if args.quick:
            self.rounds = args.rounds or 2
            self.seq_count, self.seq_dur = 2000, 0.25
            self.conc_count, self.conc_dur = 10000, 0.4
            self.cli_runs = args.cli_runs or 8
            self.warm_seq = (100, 0.1)
            self.startup_runs, self.importtime_reps = 5, 2
        else:
            self.rounds = args.rounds or 5
            self.seq_count, self.seq_dur = 20000, 2.0
            self.conc_count, self.conc_dur = 100000, 3.0
            self.cli_runs = args.cli_runs or 30
            self.warm_seq = (300, 0.3)
            self.startup_runs, self.importtime_reps = 20, 5

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        dirs = {}
        for var, sub in (
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_DATA_HOME", "data"),
            ("XDG_STATE_HOME", "state"),
            ("XDG_RUNTIME_DIR", "run"),
        ):
            d = self.tmp / sub
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)
            dirs[var] = str(d)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_TOKEN_BROKER_", "XDG_"))}
        env.update(dirs)
        env["MCP_TOKEN_BROKER_KEY_FILE"] = str(self.tmp / "vault.key")
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        # Bytecode: an installed broker runs from cached .pyc files. With
        # PYTHONDONTWRITEBYTECODE set (as in some dev shells and CI), every
        # CLI call would recompile broker/*.py; a private cache keeps the
        # figures realistic without writing __pycache__ into the tree.
        self.no_bytecode_env = os.environ.get("PYTHONDONTWRITEBYTECODE")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        self.env = env
        self.broker_sock = os.path.join(dirs["XDG_RUNTIME_DIR"], "mcp-token-broker", "broker.sock")
        self.audit_log = Path(dirs["XDG_STATE_HOME"]) / "mcp-token-broker" / "audit.log"
        r = subprocess.run(
            [self.py, "-c", SETUP_CODE, env["MCP_TOKEN_BROKER_KEY_FILE"], CONNECTION, str(TOKEN_LEN)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise BenchError(f"writing the connection failed:\n{r.stderr}")

    def start_broker(self) -> None:
        log = open(self.tmp / "broker.log", "wb")
        self.broker = subprocess.Popen(
            [self.cli, "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait_socket(self.broker_sock, self.broker, "/v1/health")
        raw = _keepalive_get(self.broker_sock, TOKEN_PATH)
        head, _, body = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"token probe answered {raw[:300]!r}")
        doc = json.loads(body)
        if doc.get("access_token") != "x" * TOKEN_LEN:
            raise BenchError(f"token probe returned an unexpected token: {body[:100]!r}")
        self.response = raw

    def start_floor(self) -> None:
        resp_file = self.tmp / "floor-response.bin"
        resp_file.write_bytes(self.response)
        self.floor = subprocess.Popen(
            [sys.executable, __file__, "_floor", self.floor_sock, str(resp_file)],
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        _wait_socket(self.floor_sock, self.floor, None)
        raw = _keepalive_get(self.floor_sock, TOKEN_PATH)
        if raw != self.response:
            raise BenchError("the floor's answer differs from the broker's")

    def cleanup(self) -> int | None:
        if self._cleaned:
            return self._broker_code
        self._cleaned = True
        code = self._broker_code = _stop(self.broker, "the broker")
        _stop(self.floor, "the floor server")
        if self.args.keep_tmp:
            print(f"  (kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return code

    # -- load -----------------------------------------------------------------

    def load(self, sock: str, *, seq: bool, conc: bool, warm_only: bool = False) -> dict:
        scale = 0.25 if warm_only else 1.0
        cfg = {"socket": sock, "path": TOKEN_PATH}
        if seq:
            cfg["seq"] = {
                "warmup_count": self.warm_seq[0],
                "warmup_duration": self.warm_seq[1],
                "count": int(self.seq_count * scale),
                "duration": self.seq_dur * scale,
            }
        if conc:
            cfg["conc"] = {
                "conns": self.args.conns,
                "warmup_per_conn": 5,
                "warmup_timeout": 10.0,
                "count": int(self.conc_count * scale),
                "duration": self.conc_dur * scale,
                "drain_timeout": 10.0,
            }
        timeout = 60 + 2 * (self.seq_dur + self.conc_dur)
        r = subprocess.run(
            [sys.executable, __file__, "_load", json.dumps(cfg)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"the load generator failed (exit {r.returncode}):\n{r.stderr[-2000:]}") from None
        if "error" in out or r.returncode != 0:
            raise BenchError(f"the load generator against {sock} reported: {out.get('error')}\n{r.stderr[-2000:]}")
        for kind in ("seq", "conc"):
            if kind in out and out[kind]["n"] == 0:
                raise BenchError(f"the {kind} load completed no fetch against {sock}")
        return out

    # -- CLI ------------------------------------------------------------------

    def _timed(self, argv: list[str], expect: str | None = None, env: dict[str, str] | None = None) -> float:
        t0 = time.perf_counter()
        r = subprocess.run(argv, env=env or self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise BenchError(f"{argv!r} exited {r.returncode}: {r.stderr.decode(errors='replace')[-500:]}")
        if expect is not None and r.stdout.decode().strip() != expect:
            raise BenchError(f"{argv!r} printed {r.stdout[:80]!r}, not the token")
        return dt

    def cli_timings(self) -> dict:
        token = "x" * TOKEN_LEN
        cli = [self.cli, "token", CONNECTION]
        bare = [self.py, "-c", "pass"]
        for _ in range(3):  # warm the page cache and the .pyc files
            self._timed(bare)
            self._timed(cli, token)
        t_cli, t_bare = [], []
        for i in range(self.cli_runs):
            # alternate which goes first
            if i % 2:
                t_bare.append(self._timed(bare))
                t_cli.append(self._timed(cli, token))
            else:
                t_cli.append(self._timed(cli, token))
                t_bare.append(self._timed(bare))
        return {"cli": t_cli, "bare": t_bare}

    def startup_costs(self) -> dict:
        """What the editable install's import finder costs each interpreter start."""
        site_packages = subprocess.run(
            [self.py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        ).stdout.strip()
        finders = sorted(p.name for p in Path(site_packages).glob("__editable__*.pth"))
        finder_mods = []
        for pth in finders:
            m = re.match(r"import (\S+?);", (Path(site_packages) / pth).read_text())
            if m:
                finder_mods.append(m.group(1))
        runs = self.startup_runs
        variants: dict[str, tuple[list[str], dict[str, str], str | None]] = {
            "python -c pass": ([self.py, "-c", "pass"], self.env, None),
            "token CLI": ([self.cli, "token", CONNECTION], self.env, "x" * TOKEN_LEN),
            "python -S -c pass": ([self.py, "-S", "-c", "pass"], self.env, None),
        }
        if finder_mods:
            code = f"import sys; sys.path.append({site_packages!r}); " + "; ".join(
                f"import {m}; {m}.install()" for m in finder_mods
            )
            variants["python -S + editable finder only"] = ([self.py, "-S", "-c", code], self.env, None)
            variants["python -S + sys.path only"] = (
                [self.py, "-S", "-c", f"import sys; sys.path.append({site_packages!r})"],
                self.env,
                None,
            )
        # A venv without the editable install (no .pth at all), the package on
        # PYTHONPATH instead: what a regular (wheel) install would start like.
        plain = self.tmp / "plain-venv"
        r = subprocess.run([self.py, "-m", "venv", "--without-pip", str(plain)], capture_output=True, text=True)
        if r.returncode == 0:
            script = plain / "bin" / "mcp-token-broker"
            body = Path(self.cli).read_text().split("\n", 1)[1]
            script.write_text(f"#!{plain / 'bin' / 'python'}\n{body}")
            script.chmod(0o755)
            penv = {**self.env, "PYTHONPATH": str(ROOT)}
            variants["plain venv: python -c pass"] = ([str(plain / "bin" / "python"), "-c", "pass"], penv, None)
            variants["plain venv: token CLI"] = ([str(script), "token", CONNECTION], penv, "x" * TOKEN_LEN)
        if self.no_bytecode_env:
            nenv = {k: v for k, v in self.env.items() if k != "PYTHONPYCACHEPREFIX"}
            nenv["PYTHONDONTWRITEBYTECODE"] = self.no_bytecode_env
            variants["token CLI as this shell runs it (no .pyc)"] = (
                [self.cli, "token", CONNECTION],
                nenv,
                "x" * TOKEN_LEN,
            )
        times: dict[str, list[float]] = {k: [] for k in variants}
        for argv, env, expect in variants.values():
            self._timed(argv, expect, env)
        for _ in range(runs):
            for k, (argv, env, expect) in variants.items():
                times[k].append(self._timed(argv, expect, env))
        # -X importtime: the finder's cumulative import time (inflated by the tracing itself)
        importtime = {}
        for _ in range(self.importtime_reps):
            r = subprocess.run(
                [self.py, "-X", "importtime", "-c", "pass"], env=self.env, capture_output=True, text=True
            )
            for line in r.stderr.splitlines():
                m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s+)(\S+)", line)
                if m and len(m.group(3)) <= 3:  # top-level imports of site
                    importtime.setdefault(m.group(4), []).append(int(m.group(2)))
        # the CLI's own imports, beyond what a bare start loads
        cli_imports = {}
        for _ in range(self.importtime_reps):
            r = subprocess.run(
                [self.py, "-X", "importtime", self.cli, "token", CONNECTION],
                env=self.env,
                capture_output=True,
                text=True,
            )
            for line in r.stderr.splitlines():
                m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s+)(\S+)", line)
                if m and len(m.group(3)) == 1:
                    cli_imports.setdefault(m.group(4), []).append(int(m.group(2)))
        return {
            "finder_pth": finders,
            "finder_modules": finder_mods,
            "wall": times,
            "importtime_site_children_us": {k: statistics.median(v) for k, v in importtime.items()},
            "importtime_cli_toplevel_us": {k: statistics.median(v) for k, v in cli_imports.items()},
        }

    # -- the run --------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        t_start = time.perf_counter()
        mode = "quick" if args.quick else "full"
        for exe in (self.py, self.cli):
            if not os.access(exe, os.X_OK):
                raise BenchError(f"{exe} is missing; create the venv and `pip install -e .` first")
        vpy = subprocess.run(
            [self.py, "-c", "import sys, platform; print(platform.python_implementation(), sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"mcp-token-broker socket benchmark ({mode} run)")
        print(
            f"machine: nproc={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {_cpu_model()}, "
            f"{platform.system()} {platform.release()}"
        )
        print(f"python:  venv {vpy} ({self.py}); load generator/floor {platform.python_version()}")
        print(f"tmp:     {self.tmp}")
        self.setup()
        if self.no_bytecode_env:
            print(
                "note:    PYTHONDONTWRITEBYTECODE is set here; the run uses a private bytecode cache "
                "(PYTHONPYCACHEPREFIX) like an installed broker would"
            )
        self.start_broker()
        self.start_floor()
        if self.args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise BenchError("--pin needs two usable CPUs")
            for proc in (self.broker, self.floor):
                os.sched_setaffinity(proc.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[1]})  # inherited by the load generators and CLI runs
            print(f"pinned:  servers on CPU {cpus[0]}, load generator and CLI runs on CPU {cpus[1]}")
        head_len = self.response.index(b"\r\n\r\n") + 4
        print(
            f"response: {len(self.response)} bytes (head {head_len}, "
            f"token {TOKEN_LEN} chars); floor answers the same bytes"
        )
        print(
            f"rounds:  {self.rounds} x (broker, floor); seq <= {self.seq_count} fetches / {self.seq_dur}s, "
            f"{args.conns} conns <= {self.conc_count} fetches / {self.conc_dur}s per round"
        )
        print()

        # Warm-up (not recorded).
        for sock in (self.broker_sock, self.floor_sock):
            self.load(sock, seq=True, conc=True, warm_only=True)

        res = {"broker": [], "floor": []}
        print("latencies in µs; s/c cpu/f = the server's CPU time per fetch (µs), sequential/concurrent")
        print(
            f"{'round':<6}{'target':<8}{'seq p50':>9}{'seq p99':>9}{'seq /s':>9}"
            f"{'conc /s':>10}{'c p50':>9}{'c p99':>9}{'c max':>9}{'s cpu/f':>9}{'c cpu/f':>9}"
        )
        for rnd in range(1, self.rounds + 1):
            for target, sock, proc in (
                ("broker", self.broker_sock, self.broker),
                ("floor", self.floor_sock, self.floor),
            ):
                # Two load processes, so the server's CPU time splits by kind.
                out = {}
                for kind in ("seq", "conc"):
                    cpu0 = _cpu_seconds(proc.pid)
                    part = self.load(sock, seq=kind == "seq", conc=kind == "conc")
                    part[kind]["server_cpu_us"] = (_cpu_seconds(proc.pid) - cpu0) / part[kind]["n"] * 1e6
                    out.update(part)
                res[target].append(out)
                s, c = out["seq"], out["conc"]
                print(
                    f"{rnd:<6}{target:<8}{s['p50_us']:>9.0f}{s['p99_us']:>9.0f}{s['rate']:>9.0f}"
                    f"{c['rate']:>10.0f}{c['p50_us']:>9.0f}{c['p99_us']:>9.0f}{c['max_us']:>9.0f}"
                    f"{s['server_cpu_us']:>9.0f}{c['server_cpu_us']:>9.0f}",
                    flush=True,
                )
            if self.broker.poll() is not None:
                raise BenchError(f"the broker exited ({self.broker.returncode}) during the run")

        def med(target: str, kind: str, key: str) -> float:
            return statistics.median(o[kind][key] for o in res[target])

        b_seq_p50, f_seq_p50 = med("broker", "seq", "p50_us"), med("floor", "seq", "p50_us")
        b_seq_p99, f_seq_p99 = med("broker", "seq", "p99_us"), med("floor", "seq", "p99_us")
        b_seq_rate, f_seq_rate = med("broker", "seq", "rate"), med("floor", "seq", "rate")
        b_rate, f_rate = med("broker", "conc", "rate"), med("floor", "conc", "rate")
        b_c50, f_c50 = med("broker", "conc", "p50_us"), med("floor", "conc", "p50_us")
        b_c99, f_c99 = med("broker", "conc", "p99_us"), med("floor", "conc", "p99_us")
        b_max = max(o["conc"]["max_us"] for o in res["broker"])
        b_seq_max = max(o["seq"]["max_us"] for o in res["broker"])
        f_max = max(o["conc"]["max_us"] for o in res["floor"])
        n_fetches = sum(o["seq"]["n"] + o["conc"]["n"] for o in res["broker"])

        print()
        print("Token fetches, medians over rounds (broker | floor | broker/floor)")
        print(
            f"  sequential, 1 keep-alive conn:  p50 {b_seq_p50:7.0f} µs | {f_seq_p50:6.0f} µs "
            f"| x{b_seq_p50 / f_seq_p50:.2f}"
        )
        print(
            f"                                  p99 {b_seq_p99:7.0f} µs | {f_seq_p99:6.0f} µs "
            f"| x{b_seq_p99 / f_seq_p99:.2f}"
        )
        print(
            f"                                  {b_seq_rate:7.0f} /s  | {f_seq_rate:6.0f} /s  "
            f"(max {b_seq_max / 1000:.1f} ms)"
        )
        print(
            f"  {args.conns} concurrent keep-alive conns: {b_rate:7.0f} /s  | {f_rate:6.0f} /s  "
            f"| broker rate = {b_rate / f_rate:.2f} of floor"
        )
        print(f"                                  p50 {b_c50 / 1000:7.2f} ms | {f_c50 / 1000:6.2f} ms")
        print(f"                                  p99 {b_c99 / 1000:7.2f} ms | {f_c99 / 1000:6.2f} ms")
        print(
            f"                                  max {b_max / 1000:7.2f} ms | {f_max / 1000:6.2f} ms  (over all rounds)"
        )
        b_cpu_s, f_cpu_s = med("broker", "seq", "server_cpu_us"), med("floor", "seq", "server_cpu_us")
        b_cpu_c, f_cpu_c = med("broker", "conc", "server_cpu_us"), med("floor", "conc", "server_cpu_us")
        print(f"  server CPU per fetch, seq:      {b_cpu_s:7.0f} µs | {f_cpu_s:6.0f} µs | x{b_cpu_s / f_cpu_s:.2f}")
        print(f"  server CPU per fetch, conc:     {b_cpu_c:7.0f} µs | {f_cpu_c:6.0f} µs | x{b_cpu_c / f_cpu_c:.2f}")
        f_cli_c = med("floor", "conc", "client_cpu_us")
        b_cli_c = med("broker", "conc", "client_cpu_us")
        busy = f_cli_c * f_rate / 1e6
        note = "; the floor's rate is the client's own ceiling" if busy >= 0.8 else ""
        print(
            f"  load generator CPU per fetch, conc: {b_cli_c:4.0f} µs | {f_cli_c:4.0f} µs"
            f"  (client ~{busy:.0%} busy against the floor{note})"
        )
        print(f"  broker fetches measured: {n_fetches}")

        # The CLI.
        print()
        print(f"Token CLI, {self.cli_runs} runs alternating with the bare interpreter", flush=True)
        cli = self.cli_timings()
        cli_med, bare_med = statistics.median(cli["cli"]), statistics.median(cli["bare"])
        print(
            f"  mcp-token-broker token {CONNECTION}:  median {cli_med * 1000:6.1f} ms  "
            f"(min {min(cli['cli']) * 1000:.1f}, max {max(cli['cli']) * 1000:.1f})"
        )
        print(
            f"  python -c pass (same venv):    median {bare_med * 1000:6.1f} ms  "
            f"(min {min(cli['bare']) * 1000:.1f}, max {max(cli['bare']) * 1000:.1f})"
        )
        print(f"  ratio: x{cli_med / bare_med:.2f}")

        costs = self.startup_costs()
        print()
        print(f"Interpreter start-up, {self.startup_runs} runs each, interleaved (medians)")
        walls = {k: statistics.median(v) for k, v in costs["wall"].items()}
        for k, v in walls.items():
            print(f"  {k:<44} {v * 1000:6.1f} ms")
        if "python -S + editable finder only" in walls:
            finder = walls["python -S + editable finder only"] - walls["python -S + sys.path only"]
            print(
                f"  => editable finder ({', '.join(costs['finder_pth'])}): ~{finder * 1000:.1f} ms per start "
                f"({finder / walls['python -c pass']:.0%} of `python -c pass`, "
                f"{finder / walls['token CLI']:.0%} of the token CLI)"
            )
        if "plain venv: token CLI" in walls:
            pc, pb = walls["plain venv: token CLI"], walls["plain venv: python -c pass"]
            print(
                f"  => without the editable install: token CLI {pc * 1000:.1f} ms vs python -c pass {pb * 1000:.1f} ms"
                f" = x{pc / pb:.2f} (with it, same runs: x{walls['token CLI'] / walls['python -c pass']:.2f})"
            )
        it = costs["importtime_site_children_us"]
        shown = {k: v for k, v in it.items() if k in costs["finder_modules"] or k == "_distutils_hack"}
        if shown:
            print(
                "  -X importtime, cumulative (tracing inflates it): "
                + ", ".join(f"{k} {v / 1000:.1f} ms" for k, v in shown.items())
            )
        top = sorted(costs["importtime_cli_toplevel_us"].items(), key=lambda kv: -kv[1])[:6]
        if top:
            print(
                "  token CLI top-level imports (-X importtime, cumulative): "
                + ", ".join(f"{k} {v / 1000:.1f} ms" for k, v in top)
            )

        # Targets.
        checks = [
            ("sequential p50", f"<= {SEQ_P50_US:.0f} µs", f"{b_seq_p50:.0f} µs", b_seq_p50 <= SEQ_P50_US),
            ("sequential p99", f"<= {SEQ_P99_US / 1000:.0f} ms", f"{b_seq_p99 / 1000:.2f} ms", b_seq_p99 <= SEQ_P99_US),
            (f"concurrent ({args.conns}) rate", f">= {CONC_RATE:.0f}/s", f"{b_rate:.0f}/s", b_rate >= CONC_RATE),
            (
                "concurrent rate / floor",
                f">= {CONC_FLOOR_SHARE:.2f}",
                f"{b_rate / f_rate:.3f}",
                b_rate / f_rate >= CONC_FLOOR_SHARE,
            ),
            (
                "slowest concurrent fetch",
                f"<= {CONC_MAX_MS:.0f} ms",
                f"{b_max / 1000:.1f} ms",
                b_max <= CONC_MAX_MS * 1000,
            ),
            (
                "token CLI / python -c pass",
                f"<= {CLI_RATIO:.0f}x",
                f"{cli_med / bare_med:.2f}x",
                cli_med / bare_med <= CLI_RATIO,
            ),
        ]
        print()
        print("Targets")
        for name, target, got, ok in checks:
            print(f"  {'PASS' if ok else 'MISS'}  {name:<28} {got:>10}   (target {target})")
        print(
            f"  ratios of medians, broker/floor: sequential p50 x{b_seq_p50 / f_seq_p50:.2f}, "
            f"concurrent rate {b_rate / f_rate:.3f}"
        )

        audit_bytes = sum(p.stat().st_size for p in self.audit_log.parent.glob("audit.log*"))
        code = self.cleanup()
        print()
        print(
            f"audit log: {audit_bytes / 1e6:.1f} MB written (rotates at 10 MB); "
            f"broker exit on SIGTERM: {code}; wall {time.perf_counter() - t_start:.0f} s"
        )
        if code not in (0, None):
            raise BenchError(f"the broker exited with {code} on SIGTERM; see its log")
        return 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_load":
        return role_load(json.loads(argv[1]))
    if argv and argv[0] == "_floor":
        return role_floor(argv[1], argv[2])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    p.add_argument("--rounds", type=int, default=0, help="alternating rounds per target (5; quick 2)")
    p.add_argument("--cli-runs", type=int, default=0, help="token CLI runs (30; quick 8)")
    p.add_argument("--conns", type=int, default=50, help="concurrent keep-alive connections (50)")
    p.add_argument("--venv", default=str(ROOT / ".venv"), help="the venv with mcp-token-broker installed")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the servers to one CPU and the client to another (less noise; default: the scheduler decides)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (broker.log, audit.log)")
    args = p.parse_args(argv)
    bench = Bench(args)
    try:
        return bench.run()
    except BenchError as exc:
        print(f"\nBROKEN: {exc}", file=sys.stderr)
        log = bench.tmp / "broker.log"
        if log.exists():
            print("broker log (tail):\n" + log.read_text(errors="replace")[-2000:], file=sys.stderr)
        bench.cleanup()
        return 1
    except BaseException:
        bench.cleanup()
        raise


if __name__ == "__main__":
    sys.exit(main())
