"""Waiting for an approval is never silent, and a timeout is not a refusal (issue 10, item 11).

A real `serve --policy ask` with a short `--approval-timeout`, the real `token`
and `headers` commands. While the service holds the request it sends an
interim `102 Processing` answer; the command says "waiting for approval" on
stderr when stderr is a terminal (a pty here) or with `-v`, and stays quiet
otherwise. Nobody answering ends with `approval_timeout` (exit 9, its own
message, an audit line "no answer in N s"); a refusal keeps access_denied (7).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from broker import codes
from broker.client.api_client import BrokerClient
from broker.service.audit import read_audit
from broker.storage.paths import Paths

from .conftest import start_service

pytestmark = pytest.mark.timeout(120)

WAITING = "waiting for approval in MCP Token Broker…"


@pytest.fixture
def asking(cli, stack, request):
    """A connected `demo` behind `serve --policy ask --approval-timeout 2` (or the param's seconds)."""
    _, mcp = stack
    assert cli("add", "demo", mcp.url).returncode == 0
    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr
    seconds = str(getattr(request, "param", 2))
    service = start_service(cli, "--policy", "ask", "--approval-timeout", seconds)
    yield service
    assert service.stop() == 0, service.log


def audit_lines() -> list[dict]:
    return read_audit(Paths.default().state_dir / "audit.log")


def test_the_timeout_has_its_own_code_message_and_audit_line(cli, asking):
    r = cli("token", "demo")
    assert r.returncode == codes.exit_for("approval_timeout") == 9, r.stderr
    assert r.stdout == ""
    assert "no answer to the approval request in 2 s" in r.stderr, r.stderr
    assert "may not have" not in r.stderr  # not the refusal's words
    [line] = [e for e in audit_lines() if e["outcome"] == "timeout"]
    assert line["connection"] == "demo" and line["detail"] == "no answer in 2 s"
    assert not [e for e in audit_lines() if e["outcome"] == "denied"]
    # `headers` the same.
    h = cli("headers", "demo")
    assert h.returncode == 9 and h.stdout == "", h.stderr


@pytest.mark.parametrize("asking", [60], indirect=True)  # time to answer
def test_a_refusal_keeps_its_code_and_message(cli, asking):
    # The requester is its own application (a python wrapper), so that this
    # test, which answers, is not the application that asked.
    wrapper = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, cli.exe, "token", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env,
    )  # fmt: skip
    try:
        pending = []
        client = BrokerClient()
        while not pending and proc.poll() is None:  # until the service holds the question
            pending = client.request("GET", "/v1/approvals")["approvals"]
            time.sleep(0.05)
        [approval] = pending
        code = re.search(rf"approval {approval['id']}.*code ([0-9]{{4}}-[0-9]{{4}})", asking.log).group(1)
        answer = cli("approve", approval["id"], "deny_session", "--code", code)
        assert answer.returncode == 0, answer.stderr
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == codes.exit_for("access_denied") == 7, stderr
    assert "may not have demo's token" in stderr and "no answer" not in stderr
    assert [e["outcome"] for e in audit_lines() if e["outcome"] in ("denied", "timeout")] == ["denied"]


def test_verbose_says_it_is_waiting(cli, asking):
    r = cli("-v", "token", "demo")
    assert r.returncode == 9
    assert WAITING in r.stderr, r.stderr
    assert r.stderr.index(WAITING) < r.stderr.index("no answer")


def test_quiet_without_a_terminal_or_verbose(cli, asking):
    for command in ("token", "headers"):
        r = cli(command, "demo")  # stderr is a pipe
        assert r.returncode == 9
        assert "waiting" not in r.stderr, r.stderr


def test_a_terminal_on_stderr_hears_it(cli, asking):
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [cli.exe, "headers", "demo"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=cli.env,
        )
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the pty
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = seen.decode("utf-8", "replace")
    assert WAITING in text, text
    assert proc.returncode == 9 and stdout == b""
