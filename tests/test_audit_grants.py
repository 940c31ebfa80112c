import stat
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from broker.errors import SettingsCorrupt, UsageError
from broker.service.audit import AuditLog, read_audit
from broker.service.grants import Grants


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
    assert entries[0] == {
        "time": 1234.5,
        "connection": "gh",
        "outcome": "served",
        "client": "claude",
        "pid": 42,
        "exe": "/usr/bin/node",
        "script": "/opt/claude/cli.js",
    }
    assert stat.S_IMODE((tmp_path / "state" / "audit.log").stat().st_mode) == 0o600
    assert read_audit(tmp_path / "state" / "audit.log", connection="x") == []


def test_audit_survives_a_process_crash_and_a_torn_line(tmp_path):
    path = tmp_path / "audit.log"
    code = f"""
import os
from broker.service.audit import AuditLog
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


def test_audit_extra_fields_on_the_first_line_of_a_client(tmp_path):
    log = AuditLog(tmp_path / "audit.log", clock=lambda: 1.0)
    extra = {"decision": "allow_session", "answered_by": "desktop app"}
    log.record(
        connection="gh", client=FakeClient(), outcome="answered", detail="allow_session by desktop app", fields=extra
    )
    log.record(connection=None, client=FakeClient(), outcome="identity_changed", detail="the process has exited")
    log.close()
    first, second = read_audit(tmp_path / "audit.log")
    assert first["decision"] == "allow_session" and first["answered_by"] == "desktop app"
    assert first["client"] == "claude" and first["outcome"] == "answered"
    assert second["connection"] is None and "decision" not in second


def test_approval_code_is_single_use_and_tries_are_limited(tmp_path):
    import asyncio

    from broker.service.grants import MAX_CODE_TRIES, ApprovalRequest, new_code

    async def main():
        grants = Grants(tmp_path / "grants.json")
        code = new_code()
        assert len(code) == 9 and code[4] == "-" and code.replace("-", "").isdigit()
        answers, closed = [], []
        later = time.time() + 60
        ok = ApprovalRequest(connection="gh", client=FakeClient(), grants=grants, code=code, deadline=later,
                             on_answer=lambda r, d, by, pid: answers.append((d, by, pid)),
                             on_close=lambda r: closed.append((r.id, r.outcome)))  # fmt: skip
        assert ok.needs_code
        assert ok.check_code(f" {code.replace('-', '')} ")  # typed without the dash: fine
        ok.answer("allow_session", by="approve (pid 7)", by_pid=7)
        assert answers == [("allow_session", "approve (pid 7)", 7)]
        assert not ok.check_code(code)  # single use
        assert await ok.wait() is True
        assert closed == [(ok.id, "answered")]

        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        bad = ApprovalRequest(connection="gh", client=FakeClient(name="x", key="x"), grants=grants, code=code,
                              deadline=later, on_close=lambda r: closed.append((r.id, r.outcome)))  # fmt: skip
        for _ in range(MAX_CODE_TRIES):
            assert not bad.answered
            assert not bad.check_code(wrong)
        assert bad.answered and await bad.wait() is False
        assert not bad.check_code(code)  # too late
        assert grants.decide("x", "gh") is None  # a refused request stores nothing
        assert closed[1:] == [(bad.id, "refused")]

        # Past its deadline nobody answered: None, not a refusal; it closes once and stores nothing.
        late = ApprovalRequest(connection="gh", client=FakeClient(name="y", key="y"), grants=grants, code=code,
                               deadline=time.time() - 1,
                               on_close=lambda r: closed.append((r.id, r.outcome)))  # fmt: skip
        assert late.seconds_left() == 0
        assert await late.wait() is None and await late.wait() is None
        assert late.outcome == "expired" and closed[2:] == [(late.id, "expired")]
        late.answer("allow_always")  # too late: ignored
        assert not late.check_code(code) and grants.decide("y", "gh") is None

    asyncio.run(main())
