"""Client identification from /proc: real processes first, a fake /proc for edge cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.service.argv import SYNTAX, script_for
from broker.service.identity import (
    DEFAULT_OWN,
    UNKNOWN,
    ClientIdentity,
    OwnMarkers,
    identify,
)
from broker.service.procfs import ProcessStamp, ancestors, parse_cmdline, parse_stat

PY = os.path.basename(sys.executable)
SLEEPER = "import sys, time\nprint('ready', flush=True)\ntime.sleep(30)\n"


def write_script(path: Path, body: str = SLEEPER) -> Path:
    path.write_text(body)
    return path


def ready(proc: subprocess.Popen) -> str:
    """Block until the child's first line: by then its ancestors have all exec'd."""
    line = proc.stdout.readline()
    assert line, "child exited before it was ready"
    return line.strip()


# -- real processes -------------------------------------------------------------


def test_sleep(spawn):
    proc = spawn(["sleep", "30"])  # Popen returns after the exec succeeded
    ident = identify(proc.pid)
    assert ident.pid == ident.app_pid == proc.pid
    assert ident.exe.endswith("/sleep")
    assert os.path.isabs(ident.exe)
    assert ident.script is None
    assert ident.name == "sleep"
    assert ident.chain == ()


def test_python_script(spawn, tmp_path):
    script = write_script(tmp_path / "script.py")
    proc = spawn([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    ready(proc)
    ident = identify(proc.pid)
    assert ident.script == str(script)
    assert ident.exe == os.path.realpath(sys.executable)
    assert ident.name == f"{PY} script.py"
    assert ident.name.startswith("python")
    assert ident.key == f"{ident.exe}\0{script}"


def test_relative_script_is_made_absolute_from_cwd(spawn, tmp_path):
    (tmp_path / "sub").mkdir()
    write_script(tmp_path / "rel.py")
    proc = spawn([sys.executable, "-u", "sub/../rel.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    ready(proc)
    assert identify(proc.pid).script == os.path.join(os.path.realpath(tmp_path), "rel.py")


def test_python_module(spawn, tmp_path):
    write_script(tmp_path / "mymod.py")
    proc = spawn([sys.executable, "-m", "mymod"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    ready(proc)
    ident = identify(proc.pid)
    assert ident.script == "-m mymod"
    assert ident.name == f"{PY} -m mymod"


def walk_tree(tmp_path: Path, spawn) -> tuple[subprocess.Popen, int]:
    """my_agent.py -> sh -c '<python> mcp-token-broker; true' -> our fake CLI. Returns (agent, CLI pid)."""
    cli = write_script(
        tmp_path / "mcp-token-broker", "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(30)\n"
    )
    agent = write_script(
        tmp_path / "my_agent.py",
        textwrap.dedent(
            f"""\
            import subprocess, sys
            # "; true" keeps sh as a parent instead of letting it exec the last command.
            subprocess.run(["/bin/sh", "-c", {f"{sys.executable} {cli}; true"!r}])
            """
        ),
    )
    proc = spawn([sys.executable, str(agent)], stdout=subprocess.PIPE, text=True)
    return proc, int(ready(proc))


def test_walk_up_past_own_cli_and_shell(spawn, tmp_path):
    agent, cli_pid = walk_tree(tmp_path, spawn)
    ident = identify(cli_pid, own_exe_markers=OwnMarkers(names=frozenset({"mcp-token-broker"})))
    assert ident.pid == cli_pid
    assert ident.app_pid == agent.pid
    assert ident.script == str(tmp_path / "my_agent.py")
    assert ident.name == f"{PY} my_agent.py"
    assert ident.chain == (f"{PY} mcp-token-broker", "sh")
    assert ident.describe().endswith(f"pid {agent.pid}) via {PY} mcp-token-broker < sh")


def test_walk_up_needs_matching_markers(spawn, tmp_path):
    _, cli_pid = walk_tree(tmp_path, spawn)
    ident = identify(cli_pid, own_exe_markers=OwnMarkers(names=frozenset({"something-else"}), modules=frozenset()))
    assert ident.app_pid == cli_pid
    assert ident.name == f"{PY} mcp-token-broker"
    assert ident.chain == ()


def test_zombie_is_named_from_comm(spawn):
    proc = spawn(["sleep", "0"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    ident = identify(proc.pid)
    assert ident.app_pid == proc.pid
    assert ident.exe is None and ident.script is None
    assert ident.name == "sleep"
    assert ident.key == ""


def test_vanished_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    ident = identify(proc.pid)
    assert ident == ClientIdentity(pid=proc.pid, app_pid=proc.pid, exe=None, script=None, name=f"pid {proc.pid}")
    assert ident.key == ""
    assert ident.describe() == f"pid {proc.pid}"


def test_no_pid():
    assert identify(None) is UNKNOWN
    assert identify(0) is UNKNOWN
    assert UNKNOWN.describe() == "unknown"
    assert UNKNOWN.key == ""


def test_key_is_per_app_not_per_process(spawn, tmp_path):
    app = write_script(tmp_path / "app.py")
    other = write_script(tmp_path / "other.py")
    a1, a2, b = (spawn([sys.executable, str(s)], stdout=subprocess.PIPE, text=True) for s in (app, app, other))
    for proc in (a1, a2, b):
        ready(proc)
    sleeper = spawn(["sleep", "30"])
    k1, k2, kb, ks = (identify(p.pid).key for p in (a1, a2, b, sleeper))
    assert a1.pid != a2.pid
    assert k1 == k2
    assert len({k1, kb, ks}) == 3
    assert str(a1.pid) not in k1


def test_to_json_round_trips_through_json(spawn):
    proc = spawn(["sleep", "30"])
    doc = identify(proc.pid).to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["pid"] == proc.pid and doc["name"] == "sleep" and doc["chain"] == []


def test_stamp_matches_until_exec_or_exit(spawn, tmp_path):
    code = (
        "import os, sys; print('ready', flush=True); sys.stdin.readline();"
        " os.execv('/bin/sh', ['sh', '-c', 'echo execd; exec sleep 30'])"
    )
    proc = spawn([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert ready(proc) == "ready"
    stamp = ProcessStamp.take(proc.pid)
    try:
        assert stamp.exe is not None and stamp.start is not None
        assert stamp.changed() is None
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert ready(proc) == "execd"  # python is gone: sh runs (then sleep)
        assert stamp.changed() == "has started another program since it connected"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert stamp.changed() == "has exited"
    finally:
        stamp.close()


def test_stamp_of_a_gone_pid_checks_nothing(tmp_path):
    stamp = ProcessStamp.take(999, proc=tmp_path)
    assert stamp.changed() is None  # identified as "pid 999", which no grant names
    assert ProcessStamp.take(None) is None


def test_ancestors(spawn):
    proc = spawn(["sleep", "30"])
    chain = ancestors(proc.pid)
    assert chain[0] == os.getpid() and chain[-1] == 1 and proc.pid not in chain
    assert ancestors(None) == ()


# -- a fake /proc ---------------------------------------------------------------


def fake(
    root: Path,
    pid: int,
    ppid: int,
    argv: list[str | bytes],
    *,
    exe: str | bytes | None = None,
    comm: str = "x",
    cwd: str | None = None,
    stat: bytes | None = None,
) -> None:
    d = root / str(pid)
    d.mkdir()
    if exe is not None:
        os.symlink(os.fsencode(exe), os.fsencode(d / "exe"))
    if cwd is not None:
        os.symlink(cwd, d / "cwd")
    (d / "cmdline").write_bytes(b"".join(os.fsencode(a) + b"\0" for a in argv))
    if stat is None:
        stat = f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0".encode()
    (d / "stat").write_bytes(stat)


def test_fake_proc_comm_with_parentheses(tmp_path):
    fake(tmp_path, 50, 1, [], stat=b"50 (a) (b c) ) S 42 50 50 0 -1")
    fake(tmp_path, 42, 1, ["/usr/bin/app"], exe="/usr/bin/app")
    ident = identify(50, proc=tmp_path)
    assert ident.name == "a) (b c) "  # no exe, no argv: the comm, spaces and all
    assert ident.app_pid == 50  # not skippable, so no walking to 42


def test_fake_proc_walk_uses_ppid_after_last_paren(tmp_path):
    fake(tmp_path, 30, 1, ["/usr/bin/app"], exe="/usr/bin/app")
    fake(tmp_path, 31, 30, ["sh", "-c", "x"], exe="/usr/bin/dash", stat=b"31 (sh) S 7 (x) S 30 31 31 0")
    ident = identify(31, proc=tmp_path)
    assert ident.app_pid == 30
    assert ident.chain == ("sh",)


def test_fake_proc_everything_skippable_names_last_before_init(tmp_path):
    fake(tmp_path, 1, 0, ["/sbin/init"], exe="/usr/lib/systemd/systemd")
    fake(tmp_path, 10, 1, ["-bash"], exe="/usr/bin/bash")
    fake(tmp_path, 11, 10, ["env", "x"], exe="/usr/bin/env")
    ident = identify(11, proc=tmp_path)
    assert (ident.app_pid, ident.name, ident.chain) == (10, "bash", ("env",))


def test_fake_proc_depth_cap(tmp_path):
    for pid in range(100, 140):
        fake(tmp_path, pid, pid - 1, ["sh"], exe="/bin/sh")
    ident = identify(139, proc=tmp_path)
    assert len(ident.chain) == 16
    assert ident.app_pid == 139 - 16


def test_fake_proc_ppid_loop_terminates(tmp_path):
    fake(tmp_path, 5, 6, ["sh"], exe="/bin/sh")
    fake(tmp_path, 6, 5, ["sh"], exe="/bin/sh")
    assert identify(5, proc=tmp_path).app_pid == 6


def test_fake_proc_unreadable_parent_stops_the_walk(tmp_path):
    fake(tmp_path, 20, 19, ["bash", "-c", "x"], exe="/bin/bash")  # 19 does not exist
    ident = identify(20, proc=tmp_path)
    assert (ident.app_pid, ident.name, ident.chain) == (20, "bash", ())


def test_fake_proc_sudo_is_not_skipped(tmp_path):
    fake(tmp_path, 70, 1, ["/usr/bin/app"], exe="/usr/bin/app")
    fake(tmp_path, 71, 70, ["sudo", "x"], exe="/usr/bin/sudo")
    fake(tmp_path, 72, 71, ["/bin/sh", "-c", "x"], exe="/usr/bin/dash")
    ident = identify(72, proc=tmp_path)
    assert (ident.app_pid, ident.name, ident.chain) == (71, "sudo", ("sh",))


def test_fake_proc_launchers_and_own(tmp_path):
    """claude -> node npx-cli.js -> uvx -> uv -> python -m broker -> sh -> ours."""
    node = "/usr/bin/node"
    fake(tmp_path, 200, 1, ["claude"], exe=node)  # a process title: no script left in argv
    fake(tmp_path, 201, 200, [node, "/usr/lib/node_modules/npm/bin/npm-cli.js", "exec", "pkg"], exe=node)
    fake(tmp_path, 202, 201, [node, "/usr/lib/node_modules/npm/bin/npx-cli.js", "-y", "pkg"], exe=node)
    fake(tmp_path, 203, 202, ["uvx", "mcp-token-broker"], exe="/home/u/.local/bin/uvx")
    fake(tmp_path, 204, 203, ["uv", "tool", "run"], exe="/home/u/.local/bin/uv")
    fake(tmp_path, 205, 204, ["python3", "-X", "dev", "-m", "broker", "proxy"], exe="/usr/bin/python3.11")
    fake(tmp_path, 206, 205, ["sh", "-c", "x; true"], exe="/usr/bin/dash")
    fake(tmp_path, 207, 206, ["/venv/bin/python", "/venv/bin/mcp-token-broker", "token"], exe="/usr/bin/python3.11")
    ident = identify(207, proc=tmp_path)
    assert ident.app_pid == 200
    assert ident.name == "claude"
    assert ident.exe == node and ident.script is None
    assert ident.chain == (
        "python mcp-token-broker",
        "sh",
        "python3 -m broker",
        "uv",
        "uvx",
        "node npx-cli.js",
        "node npm-cli.js",
    )
    # The same tree with markers that do not know us names our CLI itself.
    assert identify(207, proc=tmp_path, own_exe_markers=OwnMarkers(frozenset(), frozenset())).app_pid == 207


def test_fake_proc_a_title_is_never_a_launcher(tmp_path):
    """`npm exec` retitles node to "npm exec pkg"; so can any program. Titles decide nothing."""
    node = "/usr/bin/node"
    fake(tmp_path, 210, 1, ["/usr/bin/app"], exe="/usr/bin/app")
    fake(tmp_path, 211, 210, ["npm exec @scope/pkg"], exe=node)
    fake(tmp_path, 212, 210, ["npx", "x"], exe="/tmp/evil")
    fake(tmp_path, 213, 210, ["uvx"], exe="/usr/bin/python3.12")
    for pid in (211, 212, 213):
        ident = identify(pid, proc=tmp_path)
        assert (ident.app_pid, ident.chain) == (pid, ()), ident.describe()
    fake(tmp_path, 214, 210, ["anything"], exe="/home/u/.local/bin/uvx")  # the kernel's exe link: a launcher
    assert identify(214, proc=tmp_path).app_pid == 210


def test_fake_proc_frozen_build_is_own(tmp_path):
    fake(tmp_path, 300, 1, ["/opt/app/bin/app", "--flag"], exe="/opt/app/bin/app")
    fake(tmp_path, 301, 300, ["mcp-token-broker", "token"], exe="/opt/broker/mcp-token-broker")
    assert identify(301, proc=tmp_path).name == "app"


def test_fake_proc_interpreters(tmp_path):
    cases = {
        ("/usr/bin/node", ("node", "--inspect", "-r", "ts-node/register", "cli.js", "--x")): "/work/cli.js",
        ("/usr/bin/node", ("node", "-e", "1")): None,
        ("/usr/bin/python3.12", ("python3", "-W", "error", "-Xdev", "-u", "-", "a.py")): None,
        ("/usr/bin/python3.12", ("python3", "-c", "pass", "a.py")): None,
        ("/usr/bin/python3.12", ("python3", "-mbroker.cli.main")): "-m broker.cli.main",
        ("/usr/bin/python3.12", ("python3", "--", "-weird.py")): "/work/-weird.py",
        ("/usr/bin/pypy3", ("pypy3", "/abs/x.py")): "/abs/x.py",
        ("/usr/bin/bash", ("bash", "-eo", "pipefail", "./run.sh")): "/work/run.sh",
        ("/usr/bin/bash", ("bash",)): None,
        ("/usr/bin/ruby3.2", ("ruby", "-I", "lib", "-rjson", "app.rb")): "/work/app.rb",
        ("/usr/bin/perl", ("perl", "-lne", "print", "file")): None,
        ("/usr/bin/php8.2", ("php", "-d", "x=1", "-f", "s.php")): "/work/s.php",
        ("/usr/bin/deno", ("deno", "run", "-A", "https://x.test/m.ts")): "https://x.test/m.ts",
        ("/usr/bin/deno", ("deno", "repl")): None,
        ("/usr/bin/bun", ("bun", "run", "index.ts")): "/work/index.ts",
    }
    for pid, ((exe, argv), script) in enumerate(cases.items(), start=400):
        fake(tmp_path, pid, 1, list(argv), exe=exe, cwd="/work")
        assert identify(pid, proc=tmp_path).script == script, argv


def test_fake_proc_unreadable_exe_falls_back_to_argv0(tmp_path):
    fake(tmp_path, 500, 1, ["./bin/tool", "x"], cwd="/srv")  # no exe link, as for a non-dumpable process
    fake(tmp_path, 501, 1, ["tool"])
    assert identify(500, proc=tmp_path).exe == "/srv/bin/tool"
    assert identify(501, proc=tmp_path).exe == "tool"


def test_fake_proc_deleted_exe_keeps_its_path(tmp_path):
    fake(tmp_path, 510, 1, ["/opt/app/app"], exe="/opt/app/app (deleted)")
    assert identify(510, proc=tmp_path).key == "/opt/app/app\0"


def test_fake_proc_hostile_names_are_escaped(tmp_path):
    exe = b"/tmp/ev\xffil"
    fake(tmp_path, 600, 1, [b"/tmp/\xe2\x80\xaeexe.txt\nINFO granted"], exe=exe)
    ident = identify(600, proc=tmp_path)
    assert os.fsencode(ident.exe) == exe  # the key keeps the exact bytes
    line = ident.describe()
    assert "\n" not in line and "\u202e" not in line
    assert "\\u202e" in ident.name and "\\x0a" in ident.name
    assert "\\xff" in line
    doc = ident.to_json()
    assert doc["exe"] == "/tmp/ev\\xffil"
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # no lone surrogates left


def test_fake_proc_missing_pid(tmp_path):
    assert identify(999, proc=tmp_path) == ClientIdentity(999, 999, None, None, "pid 999")


def test_default_markers():
    assert "mcp-token-broker" in DEFAULT_OWN.names
    assert {"broker", "broker.cli.main"} <= DEFAULT_OWN.modules


# -- parsers (hypothesis) ----------------------------------------------------------


@given(st.binary(max_size=300))
def test_parse_stat_never_raises(raw):
    result = parse_stat(raw)
    assert result is None or (isinstance(result[0], str) and result[1] >= 0)


@given(st.binary(max_size=40).filter(lambda b: b"\0" not in b), st.integers(0, 2**22), st.integers(1, 2**22))
def test_parse_stat_round_trip(comm, ppid, pid):
    raw = b"%d (%s) S %d 1 1 0 -1 4194560" % (pid, comm, ppid)
    assert parse_stat(raw) == (comm.decode("utf-8", "surrogateescape"), ppid)


@given(st.binary(max_size=300))
def test_parse_cmdline_never_raises(raw):
    assert all(isinstance(a, str) for a in parse_cmdline(raw))


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), max_size=8))
def test_parse_cmdline_round_trip(args):
    raw = b"".join(a + b"\0" for a in args)
    expected = list(args)
    while expected and not expected[-1]:
        expected.pop()
    assert [os.fsencode(a) for a in parse_cmdline(raw)] == expected


@given(st.sampled_from(sorted(SYNTAX)), st.lists(st.text(max_size=12), max_size=10))
def test_script_parsers_never_raise(family, args):
    script = script_for(family, args)
    assert script is None or script in args or script.startswith("-m ")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=60))
def test_identify_never_raises_on_garbage(stat, cmdline, exe):
    with tempfile.TemporaryDirectory() as root:
        d = Path(root, "77")
        d.mkdir()
        (d / "stat").write_bytes(stat)
        (d / "cmdline").write_bytes(cmdline)
        if exe and b"\0" not in exe:
            os.symlink(exe, os.fsencode(d / "exe"))
        ident = identify(77, proc=Path(root))
        assert ident.pid == 77
        ident.describe()
        json.dumps(ident.to_json(), ensure_ascii=False).encode("utf-8")
