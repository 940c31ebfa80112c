"""Attack: under the `ask` policy, the process waiting for a token answers its own question.

A real `serve --policy ask` process, the real `token` and `approve` commands.
The requester is a Python program (an "application") that runs
`mcp-token-broker token demo` and, while that waits, tries to approve the
request itself: directly over the socket, and through an `approve` command it
starts. Only an answer from outside its process tree, with the one-time code
that `serve` printed on its terminal, may release the token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from broker.client.api_client import BrokerClient
from broker.service.audit import read_audit
from broker.storage.paths import Paths

from .conftest import start_service

pytestmark = pytest.mark.timeout(180)

REQUESTER = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from broker.client.api_client import BrokerClient, ServiceError

    cli = sys.argv[1]
    token = subprocess.Popen([cli, "token", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = BrokerClient()
    while True:  # until the broker holds the question
        pending = client.request("GET", "/v1/approvals")["approvals"]
        if pending or token.poll() is not None:
            break
        time.sleep(0.05)
    print(json.dumps({"pending": pending}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["do"] == "post":  # answer over the socket, as the requester itself
            try:
                body = client.request("POST", "/v1/approvals/" + cmd["id"], cmd["body"])
                out = {"status": 200, "body": body}
            except ServiceError as exc:
                out = {"status": exc.status, "error": exc.code, "message": exc.message}
        elif cmd["do"] == "approve":  # answer through a child: the broker's own command
            r = subprocess.run([cli, "approve", *cmd["args"]], capture_output=True, text=True, input="", check=False)
            out = {"returncode": r.returncode, "stderr": r.stderr}
        elif cmd["do"] == "running":
            out = {"running": token.poll() is None}
        else:  # "finish"
            stdout, stderr = token.communicate(timeout=90)
            out = {"returncode": token.returncode, "stdout": stdout, "stderr": stderr}
        print(json.dumps(out), flush=True)
    """
)


class Requester:
    def __init__(self, cli, tmp_path) -> None:
        script = tmp_path / "requester_app.py"
        script.write_text(REQUESTER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), cli.exe],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli.env,
        )
        first = self._line()
        [self.approval] = first["pending"]
        self.id = self.approval["id"]

    def _line(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the requester exited"
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.proc.stdout.close()


def code_for(service, approval_id: str) -> str:
    """The one-time code, from where only the user sees it: the serve terminal."""
    for line in service.log.splitlines():
        if approval_id in line:
            match = re.search(r"code ([0-9]{4}-[0-9]{4})", line)
            if match:
                return match.group(1)
    return ""  # the old broker had no code


@pytest.fixture
def asking(cli, stack):
    _, mcp = stack
    assert cli("add", "demo", mcp.url).returncode == 0
    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr
    service = start_service(cli, "--policy", "ask", "--approval-timeout", "90")
    yield service
    assert service.stop() == 0, service.log


def grants_now() -> list:
    return BrokerClient().request("GET", "/v1/grants")["grants"]


def test_requester_cannot_approve_itself(cli, asking, tmp_path):
    grants_file = Paths.default().config_dir / "grants.json"
    requester = Requester(cli, tmp_path)
    try:
        code = code_for(asking, requester.id)
        listed = json.dumps(BrokerClient().request("GET", "/v1/approvals"))
        assert requester.id in listed
        if code:
            assert code not in listed and code.replace("-", "") not in listed

        # The requester answers itself over the socket, even with the right code.
        own = requester.ask(do="post", id=requester.id, body={"decision": "allow_always", "code": code})
        assert own["status"] == 403, own
        # ... and through an `approve` command it starts (a descendant).
        child = requester.ask(do="approve", args=[requester.id, "allow_always", "--code", code])
        assert child["returncode"] != 0, child
        assert "403" in child["stderr"] or "may not answer" in child["stderr"], child

        assert grants_now() == []
        assert not grants_file.exists()
        assert requester.ask(do="running") == {"running": True}  # no token served

        # The user answers from elsewhere, with the code typed at the prompt.
        r = cli("approve", requester.id, "allow_session", input=code + "\n")
        assert r.returncode == 0, r.stderr
        done = requester.ask(do="finish")
        assert done["returncode"] == 0, done
        assert done["stdout"].strip().count(".") == 2  # a JWT
    finally:
        requester.close()

    assert [(g["connection"], g["scope"]) for g in grants_now()] == [("demo", "session")]
    assert not grants_file.exists()  # nothing permanent was granted
    entries = read_audit(Paths.default().state_dir / "audit.log")
    refused = [e for e in entries if e["outcome"] == "answer_refused"]
    assert len(refused) == 2 and all(e["answered_by_pid"] != os.getpid() for e in refused)
    [answered] = [e for e in entries if e["outcome"] == "answered"]
    assert answered["decision"] == "allow_session"
    assert answered["answered_by_pid"] == os.getpid()  # the app that ran `approve`: this test
    assert "pytest" in answered["answered_by"]
    assert [e["outcome"] for e in entries if e["outcome"] == "served"] == ["served"]
    assert code not in (Paths.default().state_dir / "audit.log").read_text()


def test_wrong_codes_refuse_the_request(cli, asking, tmp_path):
    requester = Requester(cli, tmp_path)
    try:
        code = code_for(asking, requester.id)
        assert code, "serve shows the code on its terminal"
        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        for _ in range(3):
            r = cli("approve", requester.id, "allow_always", "--code", wrong)
            assert r.returncode != 0 and "code" in r.stderr, r.stderr
        # The request is over: the right code comes too late.
        r = cli("approve", requester.id, "allow_always", "--code", code)
        assert r.returncode != 0
        done = requester.ask(do="finish")
        assert done["returncode"] == 7, done  # access_denied
        assert done["stdout"] == ""
    finally:
        requester.close()
    assert grants_now() == []
    assert not (Paths.default().config_dir / "grants.json").exists()
