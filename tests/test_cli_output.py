"""`list`, `show` and `audit` speak to people; `--json` keeps the machine forms
(issue 10, item 12). Real CLI processes, directly and through a real `serve`."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import zoneinfo

import pytest

from broker.model import ConnectionSettings
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .conftest import start_service
from .helpers.seed import seed_connection

pytestmark = pytest.mark.timeout(120)

#: Far from UTC, with a 45-minute offset: a UTC clock time cannot pass for local.
ZONE = "Asia/Kathmandu"
LIFETIME = 9 * 60 + 40  # "in 9 min" for the 40 s this test may take


@pytest.fixture
def seeded(user_dirs, tmp_path, monkeypatch):
    """`demo` connected (its token expires in 9 min 40 s), `idle` never connected."""
    key_file = tmp_path / "vault.key"
    monkeypatch.setenv("MCP_TOKEN_BROKER_KEY_FILE", str(key_file))
    store = Store(Paths.default(), lambda: FileKeyStore(key_file))
    now = int(time.time())
    seed_connection(store, now=now, lifetime=LIFETIME)
    with store.transaction() as txn:
        txn.settings["idle"] = ConnectionSettings(name="idle", server_url="https://idle.example.com/mcp", added_at=now)
    local = datetime.datetime.fromtimestamp(now + LIFETIME, zoneinfo.ZoneInfo(ZONE)).strftime("%H:%M")
    return {"MCP_TOKEN_BROKER_KEY_FILE": str(key_file), "TZ": ZONE}, now + LIFETIME, local


def check_people_and_machines(cli, env, expires_at, local):
    r = cli("list", env=env)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "not connected" in lines["idle"] and "not_connected" not in r.stdout
    assert f"expires {local} (in 9 min)" in lines["demo"], r.stdout
    assert str(expires_at) not in r.stdout

    r = cli("show", "demo", env=env)
    assert r.returncode == 0, r.stderr
    assert f"expires {local} (in 9 min)" in r.stdout and str(expires_at) not in r.stdout
    r = cli("show", "idle", env=env)
    assert "not connected" in r.stdout and "not_connected" not in r.stdout

    rows = {row["name"]: row for row in cli("list", "--json", env=env).json()["connections"]}
    assert rows["idle"]["status"] == "not_connected" and rows["demo"]["expires_at"] == expires_at
    shown = cli("show", "demo", "--json", env=env).json()
    assert shown["expires_at"] == expires_at and shown["status"] == "connected"


def test_list_and_show_in_words_and_local_time_directly(cli, seeded):
    env, expires_at, local = seeded
    check_people_and_machines(cli, env, expires_at, local)


def test_list_and_show_in_words_and_local_time_through_the_service(cli, seeded):
    env, expires_at, local = seeded
    service = start_service(cli, env=env)
    try:
        check_people_and_machines(cli, env, expires_at, local)
    finally:
        assert service.stop() == 0, service.log


def test_audit_of_an_unknown_connection_says_so(cli, seeded):
    env, _, _ = seeded
    r = cli("audit", "--connection", "nosuch", env=env)
    assert r.returncode == 2
    assert "no connection named 'nosuch'" in r.stderr and r.stdout == ""
    # A known connection with nothing logged yet is not an error.
    r = cli("audit", "--connection", "idle", env=env)
    assert r.returncode == 0 and "No token" in r.stdout


def test_audit_folds_repeats_through_a_real_service_and_raw_keeps_every_line(cli, seeded):
    """Twenty hand-outs to one client in one minute are one line with ×20
    (issue 10, item 17); another client's hand-out keeps its own line;
    `--raw` and `--json` keep every entry."""
    env, _, _ = seeded
    service = start_service(cli, env=env)
    try:
        for _ in range(20):  # this test process is the application behind each `token`
            r = cli("token", "demo", env=env)
            assert r.returncode == 0, r.stderr
        other = [
            sys.executable,
            "-c",
            f"import subprocess, sys; sys.exit(subprocess.call([{cli.exe!r}, 'token', 'demo']))",
        ]
        assert subprocess.run(other, env={**cli.env, **env}, capture_output=True).returncode == 0
    finally:
        assert service.stop() == 0, service.log
    r = cli("audit", "--json", "--limit", "0", env=env)
    raw = [json.loads(line) for line in r.stdout.splitlines()]
    ours = [e for e in raw if e["pid"] == os.getpid()]
    assert len(raw) == 21 and len(ours) == 20 and {e["outcome"] for e in raw} == {"served"}
    minutes = {int(e["time"] // 60) for e in ours}  # twenty calls may straddle a minute: one line each

    r = cli("audit", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    mine = [line for line in lines if f"(pid {os.getpid()}) got demo's token" in line]
    counts = [int(line.rsplit("×", 1)[1]) if "×" in line else 1 for line in mine]
    assert len(mine) == len(minutes) and sum(counts) == 20, r.stdout
    assert len(lines) == len(mine) + 1 and "×" not in lines[-1], r.stdout  # the other client is not buried

    r = cli("audit", "--raw", env=env)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 21, r.stdout
