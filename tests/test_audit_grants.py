import stat
import subprocess
import sys
from dataclasses import dataclass

import pytest

from broker.audit import AuditLog, read_audit
from broker.errors import SettingsCorrupt, UsageError
from broker.grants import Grants


@dataclass
class FakeClient:
    name: str = "claude"
    pid: int | None = 42
    exe: str | None = "/usr/bin/node"
    script: str | None = "/opt/claude/cli.js"
    key: str = "/usr/bin/node\0/opt/claude/cli.js"

    def to_json(self):
        return {"name": self.name, "pid": self.pid, "exe": self.exe, "script": self.script}


def test_audit_lines_and_permissions(tmp_path):
    log = AuditLog(tmp_path / "state" / "audit.log", clock=lambda: 1234.5)
    log.record(connection="gh", client=FakeClient(), outcome="served")
    log.record(connection="gh", client=FakeClient(name="curl", exe="/usr/bin/curl", script=None), outcome="denied")
    log.close()
    entries = read_audit(tmp_path / "state" / "audit.log")
    assert [e["outcome"] for e in entries] == ["served", "denied"]
    assert entries[0] == {"time": 1234.5, "connection": "gh", "outcome": "served", "client": "claude", "pid": 42, "exe": "/usr/bin/node", "script": "/opt/claude/cli.js"}
    assert stat.S_IMODE((tmp_path / "state" / "audit.log").stat().st_mode) == 0o600
    assert read_audit(tmp_path / "state" / "audit.log", connection="x") == []


def test_audit_survives_a_process_crash_and_a_torn_line(tmp_path):
    path = tmp_path / "audit.log"
    code = f"""
import os
from broker.audit import AuditLog
class C:
    name="x"; pid=1
    def to_json(self): return {{}}
log = AuditLog(__import__('pathlib').Path({str(path)!r}))
for i in range(100):
    log.record(connection=f"c{{i}}", client=C(), outcome="served")
os._exit(0)  # no close, no flush, no atexit: like a crash
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    with open(path, "ab") as f:
        f.write(b'{"time": 1, "conn')  # torn line from a power cut
    entries = read_audit(path)
    assert len(entries) == 100 and entries[-1]["connection"] == "c99"


def test_audit_rotates(tmp_path):
    log = AuditLog(tmp_path / "audit.log", max_bytes=2000)
    for _ in range(2000):
        log.record(connection="c", client=FakeClient(), outcome="served")
    log.close()
    assert (tmp_path / "audit.log.1").exists()
    assert (tmp_path / "audit.log").stat().st_size < 200_000
    assert len(read_audit(tmp_path / "audit.log", limit=5)) == 5


def test_grants_session_and_always(tmp_path):
    path = tmp_path / "grants.json"
    grants = Grants(path, clock=lambda: 10)
    assert grants.decide("k1", "gh") is None
    grants.record("k1", "claude", "gh", "allow_session")
    grants.record("k2", "curl", "gh", "deny_always")
    assert grants.decide("k1", "gh") is True and grants.decide("k2", "gh") is False
    assert grants.decide("k1", "other") is None
    reloaded = Grants(path)
    assert reloaded.decide("k1", "gh") is None  # session grants die with the service
    assert reloaded.decide("k2", "gh") is False
    [g] = reloaded.list()
    assert reloaded.revoke(g.id).client_name == "curl"
    assert Grants(path).decide("k2", "gh") is None
    with pytest.raises(UsageError):
        grants.record("k", "x", "gh", "maybe")


def test_grants_forget_connection_and_corrupt_file(tmp_path):
    path = tmp_path / "grants.json"
    grants = Grants(path)
    grants.record("k", "claude", "gh", "allow_always")
    grants.forget_connection("gh")
    assert Grants(path).list() == []
    path.write_text("{broken")
    with pytest.raises(SettingsCorrupt):
        Grants(path)
