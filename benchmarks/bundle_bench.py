#!/usr/bin/env python3
"""`token` and `headers` from the installer's bundle against the venv's.

Both run on every request some MCP clients make, so the frozen bundle (a
PyInstaller bootloader that loads its own libpython and unpacks nothing) must
stay close to the venv's console script. One run, in a temp dir (XDG_* and
`MCP_TOKEN_BROKER_KEY_FILE` pointed there; no OAuth server):

1. writes a connection `bench` into the store with a day-long token and no
   refresh token (nothing refreshes), and starts ONE `serve` from the venv;
2. runs each command as a whole process, alternating bundle and venv, N
   times each, and prints the medians and the ratio bundle/venv (target
   ≤ 2×) with PASS or MISS.

Usage (from the repository root, the package installed or built):

    .venv/bin/python benchmarks/bundle_bench.py                  # /usr/bin/mcp-token-broker
    .venv/bin/python benchmarks/bundle_bench.py --bundle build/pyinstaller/dist/mcp-token-broker/mcp-token-broker

Exit status 0 when the run completed (a MISS is a report), 1 when a command failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 2.0

SETUP_CODE = r"""
import sys, time
from pathlib import Path
from broker.storage.store import Store
from broker.storage.paths import Paths
from broker.storage.keystore import FileKeyStore
from broker.model import ConnectionSettings, ConnectionState
from broker.oauth.tokens import TokenSet
from broker.secret import Secret
key_path = Path(sys.argv[1])
store = Store(Paths.default(), lambda: FileKeyStore(key_path))
now = int(time.time())
with store.transaction() as txn:
    txn.settings["bench"] = ConnectionSettings(name="bench", server_url="https://mcp.example.com/mcp", added_at=now)
    txn.states["bench"] = ConnectionState(tokens=TokenSet(
        access_token=Secret("x" * 800), token_type="Bearer", expires_at=now + 86400,
        scope=("mcp:read",), refresh_token=None, obtained_at=now))
"""


def wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True)
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"bundle_bench: {' '.join(argv)} failed ({r.returncode}): {r.stderr.decode().strip()}")
    return took


def wait_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("bundle_bench: serve exited")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bundle_bench: serve did not open its socket")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="/usr/bin/mcp-token-broker", help="the bundle's executable")
    p.add_argument("--venv", default=str(ROOT / ".venv" / "bin" / "mcp-token-broker"), help="the venv's script")
    p.add_argument("-n", type=int, default=40, help="runs of each command, per side")
    args = p.parse_args()
    for exe in (args.bundle, args.venv):
        if not shutil.which(exe):
            print(f"bundle_bench: {exe} not found (packaging/build, then apt install ./dist/...deb)", file=sys.stderr)
            return 1

    tmp = Path(tempfile.mkdtemp(prefix="bundle-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_TOKEN_BROKER_")}
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        (tmp / sub).mkdir(mode=0o700)
        env[var] = str(tmp / sub)
    (tmp / "run").mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(tmp / "run")
    env["MCP_TOKEN_BROKER_KEY_FILE"] = str(tmp / "vault.key")
    python = str(ROOT / ".venv" / "bin" / "python")
    subprocess.run([python, "-c", SETUP_CODE, str(tmp / "vault.key")], env=env, check=True, cwd=ROOT)
    log = open(tmp / "serve.log", "w")
    serve = subprocess.Popen([args.venv, "serve", "--policy", "allow"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_socket(tmp / "run" / "mcp-token-broker" / "broker.sock", serve)
        results = {}
        for command in ("token", "headers"):
            sides: dict[str, list[float]] = {"bundle": [], "venv": []}
            for _side, exe in (("bundle", args.bundle), ("venv", args.venv)):  # warm the page cache
                wall([exe, command, "bench"], env)
            for _ in range(args.n):
                for side, exe in (("bundle", args.bundle), ("venv", args.venv)):
                    sides[side].append(wall([exe, command, "bench"], env))
            results[command] = {side: statistics.median(times) * 1000 for side, times in sides.items()}
    finally:
        serve.terminate()
        serve.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"bundle: {os.path.realpath(args.bundle)}\nvenv:   {args.venv}\nruns:   {args.n} of each, alternating\n")
    print(f"{'command':10} {'bundle ms':>10} {'venv ms':>10} {'ratio':>7}")
    for command, r in results.items():
        ratio = r["bundle"] / r["venv"]
        verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
        print(f"{command:10} {r['bundle']:10.1f} {r['venv']:10.1f} {ratio:6.2f}x  {verdict} (target ≤ {TARGET_RATIO}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
