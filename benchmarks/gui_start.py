#!/usr/bin/env python3
"""Desktop app start-up: process wall time to the main window's first paint.

    .venv/bin/python benchmarks/gui_start.py [--rounds N] [--connections N] [--xvfb]

Compares, in one run and in alternating rounds:

- the real app (`ui.app.build`: the broker service on its worker thread,
  the window, the table model) with a registry of 500 connections;
- a bare QApplication + QMainWindow, the floor.

Each child process reports when its window received its first paint event,
and its peak RSS at that moment. Targets: within 1.5x of the bare window and
under 120 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import os, resource, sys, time
mode = sys.argv[1]
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow

class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint:
            rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print("painted", rss_kib, flush=True)
            os._exit(0)  # measured: no need to tear down
        return False

app = QApplication([sys.argv[0]])
if mode == "bare":
    window = QMainWindow()
    window.setWindowTitle("bare")
    window.resize(1000, 560)
else:
    import argparse
    sys.path.insert(0, sys.argv[2])
    from ui.app import build
    runner, bridge, window = build(argparse.Namespace(minimized=False, policy="allow"))
spy = FirstPaint()
window.installEventFilter(spy)
window.show()
QTimer.singleShot(30000, lambda: os._exit(3))
app.exec()
"""


def make_registry(home: Path, count: int) -> None:
    sys.path.insert(0, str(REPO))
    from broker.model import ConnectionSettings, ConnectionState
    from broker.oauth.tokens import TokenSet
    from broker.secret import Secret
    from broker.storage.keystore import FileKeyStore
    from broker.storage.paths import Paths
    from broker.storage.store import Store

    now = int(time.time())
    store = Store(Paths.default(), lambda: FileKeyStore(home / "vault.key"))
    with store.transaction() as txn:
        for i in range(count):
            name = f"server-{i:03d}"
            txn.settings[name] = ConnectionSettings(
                name=name, server_url=f"https://mcp{i}.example.com/mcp", added_at=now
            )
            if i % 5:
                txn.states[name] = ConnectionState(
                    tokens=TokenSet(
                        access_token=Secret("x" * 900),
                        token_type="Bearer",
                        expires_at=now + 3600 + i,
                        scope=("read", "write"),
                        refresh_token=None,
                        obtained_at=now,
                    )
                )


def run_child(mode: str, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(REPO)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait(timeout=30)
    if not line.startswith("painted"):
        raise SystemExit(f"{mode}: no first paint ({proc.stderr.read()[-2000:]})")
    return elapsed, int(line.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--xvfb", action="store_true", help="use a real X server (Xvfb) instead of offscreen")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gui-bench-"))
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        path = home / var.lower()
        path.mkdir(mode=0o700)
        env[var] = os.environ[var] = str(path)
    env["MCP_TOKEN_BROKER_KEY_FILE"] = os.environ["MCP_TOKEN_BROKER_KEY_FILE"] = str(home / "vault.key")
    env.pop("MCP_TOKEN_BROKER_SOCKET", None)
    xvfb = None
    if args.xvfb:
        display = ":97"
        xvfb = subprocess.Popen(
            ["Xvfb", display, "-screen", "0", "1400x900x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)
        env["DISPLAY"] = display
        env["QT_QPA_PLATFORM"] = "xcb"
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    try:
        import logging

        logging.disable(logging.WARNING)
        make_registry(home, args.connections)
        results: dict[str, list[tuple[float, int]]] = {"bare": [], "app": []}
        run_child("bare", env)  # warm the page cache for both
        run_child("app", env)
        for _ in range(args.rounds):
            for mode in ("bare", "app"):
                results[mode].append(run_child(mode, env))
    finally:
        if xvfb is not None:
            xvfb.terminate()
        shutil.rmtree(home, ignore_errors=True)

    def med(mode: str) -> float:
        return statistics.median(t for t, _ in results[mode])

    bare, app = med("bare"), med("app")
    rss = max(r for _, r in results["app"]) / 1024
    rss_bare = max(r for _, r in results["bare"]) / 1024
    ratio = app / bare
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, platform {env['QT_QPA_PLATFORM']}")
    print(f"registry: {args.connections} connections; {args.rounds} alternating rounds")
    print(f"bare QMainWindow  first paint: median {bare * 1000:7.1f} ms   peak RSS {rss_bare:6.1f} MiB")
    print(f"MCP Token Broker  first paint: median {app * 1000:7.1f} ms   peak RSS {rss:6.1f} MiB")
    print(f"ratio app/bare: {ratio:.2f}x   target <= 1.5x: {'PASS' if ratio <= 1.5 else 'MISS'}")
    print(f"peak RSS {rss:.1f} MiB   target < 120 MiB: {'PASS' if rss < 120 else 'MISS'}")
    print(
        json.dumps(
            {
                "bare_ms": round(bare * 1000, 1),
                "app_ms": round(app * 1000, 1),
                "ratio": round(ratio, 3),
                "rss_mib": round(rss, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
