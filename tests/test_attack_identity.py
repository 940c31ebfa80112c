"""Attack: borrowing another program's identity.

(a) A process connects, makes a harmless request, then execs a granted binary
    that keeps the connection: the token request must not be credited to the
    granted binary. Real `serve --policy deny`, a real grant for `perl`.
(b) A process whose title (argv[0]) is `npx` but whose executable is not a
    launcher is named itself, not its parent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from broker.service.audit import read_audit
from broker.service.identity import identify
from broker.storage.paths import Paths

from .conftest import start_service

pytestmark = pytest.mark.timeout(120)

PERL = shutil.which("perl")
NODE = shutil.which("node")

_FETCH = (
    "sub fetch { my $s = shift;"
    r' syswrite($s, "GET /v1/connections/demo/token HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n");'
    " while (sysread($s, my $b, 65536)) { print $b } }"
)
# Sends the token request on fd 9 (a connection opened by whoever exec'd us) and prints the answer.
PERL_FETCH = _FETCH + ' open(my $s, "+<&=", 9) or die "fd 9: $!"; fetch($s);'
# The same, on a connection perl opens itself.
PERL_DIRECT = _FETCH + (
    " use Socket; socket(my $c, PF_UNIX, SOCK_STREAM, 0) or die;"
    ' connect($c, sockaddr_un($ARGV[0])) or die "connect: $!"; fetch($c);'
)

ATTACKER = textwrap.dedent(
    """
    import os, socket, sys
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    # One harmless request first: by its answer the broker has accepted the connection.
    sock.sendall(b"GET /v1/health HTTP/1.1\\r\\nHost: broker\\r\\n\\r\\n")
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += sock.recv(1)
    length = int([l for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    assert head.startswith(b"HTTP/1.1 200"), head
    os.dup2(sock.fileno(), 9)  # inheritable: it survives the exec
    os.execv(sys.argv[2], [sys.argv[2], "-e", sys.argv[3]])
    """
)


def perl_key() -> str:
    return f"{os.path.realpath(PERL)}\0"


@pytest.mark.skipif(PERL is None, reason="needs perl as the granted binary")
def test_exec_after_connect_does_not_borrow_the_grant(cli, stack, tmp_path):
    _, mcp = stack
    assert cli("add", "demo", mcp.url).returncode == 0
    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr
    # perl (any perl -e program) may always have demo's token; nobody else may.
    grants_file = Paths.default().config_dir / "grants.json"
    grants_file.write_text(
        json.dumps(
            {
                "format": "mcp-token-broker-grants",
                "schema": 1,
                "grants": [
                    {
                        "client_key": perl_key(),
                        "client_name": "perl",
                        "connection": "demo",
                        "allow": True,
                        "created_at": 1,
                    }
                ],
            }
        )
    )
    service = start_service(cli, "--policy", "deny")
    try:
        sock = str(service.socket_path)
        # Control: perl connecting itself gets the token, so the grant works.
        direct = subprocess.run(
            [PERL, "-e", PERL_DIRECT, sock], capture_output=True, text=True, timeout=30, env=cli.env, check=False
        )
        assert direct.stdout.startswith("HTTP/1.1 200"), direct.stdout + direct.stderr

        script = tmp_path / "attacker.py"
        script.write_text(ATTACKER)
        attack = subprocess.run(
            [sys.executable, str(script), sock, PERL, PERL_FETCH],
            capture_output=True,
            text=True,
            timeout=30,
            env=cli.env,
            check=False,
        )
        assert attack.stdout.startswith("HTTP/1.1 403"), attack.stdout + attack.stderr
        assert '"identity_changed"' in attack.stdout
        assert "access_token" not in attack.stdout
    finally:
        assert service.stop() == 0, service.log
    entries = read_audit(Paths.default().state_dir / "audit.log")
    outcomes = [e["outcome"] for e in entries]
    # The control above was served (and its exec was before it connected);
    # the attack is recorded under the program that connected.
    assert outcomes == ["served", "identity_changed"], entries
    changed = entries[1]
    assert changed["script"] == str(script) and changed["detail"]


def test_a_process_titled_npx_is_itself(spawn):
    proc = spawn(["npx", "30"], executable=shutil.which("sleep"))  # argv[0] "npx", exe sleep
    ident = identify(proc.pid)
    assert ident.app_pid == proc.pid, ident.describe()
    assert ident.exe == os.path.realpath(shutil.which("sleep"))
    assert ident.chain == ()


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_a_node_program_retitled_npm_is_itself(spawn):
    code = "process.title = 'npm exec x'; console.log('ready'); setInterval(() => {}, 1000)"
    proc = spawn([NODE, "-e", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
        assert f.read().startswith(b"npm exec x")  # the title replaced argv
    ident = identify(proc.pid)
    assert ident.app_pid == proc.pid, ident.describe()
    assert ident.exe == os.path.realpath(NODE)
