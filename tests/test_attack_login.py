"""Another local user against a login in progress (issue 7, items 2 and 8).

The attacker is a real second UID (65534, `nobody`): a child process that
drops to it before it opens a socket or reads /proc. It strikes at the
moment the victim's browser opens (the fake browser's ``BROWSER_FIRST``
hook), which is when the authorization URL used to sit in the browser's
command line for anyone to read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path

import httpx
import pytest

from broker.driver.loopback import LoopbackListener
from broker.oauth.authorization import start_authorization, validate_callback
from broker.storage.keystore import KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .sansio import ISSUER, as_metadata
from .servers.fixtures import BROWSER_SCRIPT

pytestmark = pytest.mark.timeout(120)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")

NOBODY = 65534

#: One GET as uid 65534: the status, or how the connection ended.
ATTACKER_GET = """
import encodings.idna, http.client, json, os, sys  # imported before the stdlib may be out of reach
args = json.load(sys.stdin)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
conn = http.client.HTTPConnection("127.0.0.1", args["port"], timeout=20)
try:
    conn.request("GET", args["target"])
    print(conn.getresponse().status)
except (OSError, http.client.HTTPException) as exc:
    print("dropped", type(exc).__name__)
"""

#: Another user at the moment the victim's browser opens. `scan` records every
#: command line it can read; `follow`/`deny` walk the authorization URL as
#: mallory with the fake browser and deliver what the server answers.
ATTACKER_AT_OPEN = """
import _strptime, encodings.idna, glob, html.parser, http.cookiejar, json, os, shlex, subprocess, sys, time
import urllib.error, urllib.parse, urllib.request
what, shared, browser = sys.argv[1:4]
url = sys.stdin.read()
with open(browser) as fh:
    code = compile(fh.read(), browser, "exec")
os.setgroups([]); os.setgid(65534); os.setuid(65534)
if what == "scan":
    seen = {}
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as fh:
                seen[path] = fh.read().replace(b"\\0", b" ").decode("utf-8", "replace")
        except OSError:
            pass
    with open(os.path.join(shared, "cmdlines.json"), "w") as fh:
        json.dump(seen, fh)
else:
    for key in ("BROWSER_FIRST", "BROWSER_DETACH", "BROWSER_NO_DELIVER"):
        os.environ.pop(key, None)
    os.environ.update(BROWSER_MODE=what, BROWSER_LOGIN="mallory", BROWSER_LOG=os.path.join(shared, "attacker.log"))
    sys.argv = [browser, url]
    exec(code, {"__name__": "__main__", "__file__": browser})
"""


@pytest.fixture
def shared():
    """A directory the other user can write to (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="attack-"))
    path.chmod(0o777)
    (path / "attacker.py").write_text(ATTACKER_AT_OPEN)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def attacker_hook(shared: Path, what: str) -> str:
    return shlex.join([sys.executable, "-I", str(shared / "attacker.py"), what, str(shared), BROWSER_SCRIPT])


async def get_as_nobody(port: int, target: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", ATTACKER_GET, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(json.dumps({"port": port, "target": target}).encode())
    assert proc.returncode == 0
    return out.decode().strip()


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def callback_params(log: str) -> dict[str, str]:
    [url] = [line.split("callback GET ", 1)[1] for line in log.splitlines() if "callback GET " in line]
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


@as_root
def test_callbacks_from_another_user_are_ignored_and_the_login_completes():
    async def main():
        listener = LoopbackListener()
        await listener.start()
        pending = start_authorization(
            as_metadata(), client_id="c", redirect_uri=listener.redirect_uri, scope=(), resource=None
        )
        task = asyncio.create_task(listener.wait(lambda p: validate_callback(pending, p), timeout=60))
        state = pending.state.reveal()
        block = "/callback?" + urllib.parse.urlencode({"error": "access_denied", "state": state, "iss": ISSUER})
        hijack = "/callback?" + urllib.parse.urlencode({"code": "mallorys-code", "state": state, "iss": ISSUER})
        answers = [await get_as_nobody(listener.port, block), await get_as_nobody(listener.port, hijack)]
        assert answers == ["403", "403"]
        assert not task.done() and listener.foreign == 2 and listener.rejected == 0
        async with httpx.AsyncClient() as client:
            ok = await client.get(listener.redirect_uri, params={"code": "alices-code", "state": state, "iss": ISSUER})
        assert ok.status_code == 200
        assert (await task).reveal() == "alices-code"

    asyncio.run(main())


@as_root
@pytest.mark.parametrize("attack", ["follow", "deny"])
def test_another_user_cannot_finish_or_block_a_connect(cli, stack, shared, attack):
    """mallory logs in with the victim's authorization URL (or denies consent)
    and delivers the answer to the victim's listener before the victim does."""
    _, mcp = stack
    assert cli("add", "victim", mcp.url).returncode == 0
    r = cli("connect", "victim", env={"BROWSER_FIRST": attacker_hook(shared, attack)})
    attacker_log = (shared / "attacker.log").read_text()
    assert r.returncode == 0, r.stderr + attacker_log
    tokens = Store(Paths.default(), KeyringKeyStore).load_states()["victim"].tokens
    assert jwt_claims(tokens.access_token.reveal())["sub"] == "alice"
    assert "callback answered 403" in attacker_log, attacker_log


@as_root
def test_the_state_is_on_no_command_line_while_the_browser_opens(cli, stack, shared):
    _, mcp = stack
    assert cli("add", "argv", mcp.url).returncode == 0
    r = cli("connect", "argv", env={"BROWSER_FIRST": attacker_hook(shared, "scan")})
    assert r.returncode == 0, r.stderr
    state = callback_params(cli.browser_log.read_text())["state"]
    cmdlines = json.loads((shared / "cmdlines.json").read_text())
    # The scan saw the victim's processes (it is not blind), but not the state.
    assert any(BROWSER_SCRIPT in line for line in cmdlines.values())
    assert any("connect argv" in line for line in cmdlines.values())
    assert [line for line in cmdlines.values() if state in line] == []


def test_a_flood_of_parameters_does_not_stop_the_paste_reader(cli, stack):
    """Item 8: a pasted address with too many parameters is reported, and the
    next paste still completes the login."""
    import subprocess

    _, mcp = stack
    assert cli("add", "flood", mcp.url).returncode == 0
    proc = cli.popen("connect", "flood", "--paste", "--timeout", "60")
    line = ""
    while not line.strip().startswith("http"):
        line = proc.stderr.readline()
        assert line, "connect ended before printing the URL"
    subprocess.run([BROWSER_SCRIPT, line.strip()], env={**cli.env, "BROWSER_NO_DELIVER": "1"}, check=True, timeout=30)
    lines = cli.browser_log.read_text().splitlines()
    callback = [line.split("CALLBACK ", 1)[1] for line in lines if "CALLBACK " in line][-1]
    flood = "http://127.0.0.1:1/callback?" + "&".join(f"p{i}=x" for i in range(40))
    out, err = proc.communicate(f"{flood}\n{callback}\n", timeout=60)
    assert proc.returncode == 0, err
    assert "too many parameters" in err and "Connected flood" in out
