"""Which application is asking: for grants, approval dialogs and the audit log.

The peer of the socket is rarely the application itself: an MCP client runs
our own CLI, often through a shell, `npx` or `uvx`. Like 1Password's SSH agent,
we walk up the process tree past those and name the first process that is
neither ours nor a launcher. Grants are keyed on that application's executable
and script (`ClientIdentity.key`), never on a pid, so they survive restarts.

This is attribution for consent, not a sandbox: any process of the same user
can set its own argv, ptrace another or run a granted interpreter with its own
code preloaded. Nothing here is trusted beyond that.

Linux only, via /proc. Elsewhere `identify` returns "pid N"; macOS could
later use libproc (proc_pidpath, PROC_PIDTBSDINFO) and KERN_PROCARGS2.
Every read may race with the process exiting; we return what we learned
and never raise. If the peer exited before we looked, its pid may already
belong to another process; SO_PEERPIDFD (Linux 6.5+) could close that gap.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_OWN", "UNKNOWN", "ClientIdentity", "OwnMarkers", "ProcessStamp", "ancestors", "identify"]

_PROC = Path("/proc")
_HAVE_PROCFS = sys.platform.startswith("linux")
_MAX_DEPTH = 16
_CMDLINE_CAP = 64 * 1024
_STAT_CAP = 4096
_NAME_LIMIT = 128
_PATH_LIMIT = 512


@dataclass(frozen=True)
class OwnMarkers:
    """How to recognise the broker's own processes (skipped when walking up).

    `names` match the basename of a Python script (the console script) or of
    the executable (a frozen build); `modules` match `python -m MODULE`.
    """

    names: frozenset[str] = frozenset({"mcp-token-broker"})
    modules: frozenset[str] = frozenset({"broker", "broker.cli.main", "broker.client.launcher", "broker.__main__"})


DEFAULT_OWN = OwnMarkers()


@dataclass(frozen=True)
class ClientIdentity:
    pid: int | None  # the process that connected to the socket
    app_pid: int | None  # the process named below (after walking up)
    exe: str | None  # absolute path of its executable (argv[0] if /proc/PID/exe is unreadable)
    script: str | None  # interpreters: absolute script path, or "-m module"; else None
    name: str  # short display name, e.g. "claude", "python3 agent.py"
    chain: tuple[str, ...] = ()  # processes skipped on the way up, nearest first

    @property
    def key(self) -> str:
        """Stable identity for grants: exe and script, not the pid.

        Empty when the executable is unknown: never store a grant under "".
        """
        if not self.exe:
            return ""
        return f"{self.exe}\0{self.script or ''}"

    def describe(self) -> str:
        """One line for logs and dialogs; control characters are escaped."""
        where = " ".join(_printable(p, _PATH_LIMIT) for p in (self.exe, self.script) if p)
        if where:
            text = f"{self.name} ({where}, pid {self.app_pid})"
        elif self.app_pid is not None and self.name != f"pid {self.app_pid}":
            text = f"{self.name} (pid {self.app_pid})"
        else:
            text = self.name
        if self.chain:
            text += " via " + " < ".join(self.chain)
        return text

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; undecodable path bytes become `\\xNN` text."""
        return {
            "pid": self.pid,
            "app_pid": self.app_pid,
            "exe": _json_text(self.exe),
            "script": _json_text(self.script),
            "name": self.name,
            "chain": list(self.chain),
        }


UNKNOWN = ClientIdentity(pid=None, app_pid=None, exe=None, script=None, name="unknown", chain=())


def identify(pid: int | None, *, proc: Path = _PROC, own_exe_markers: OwnMarkers = DEFAULT_OWN) -> ClientIdentity:
    """Name the application behind the socket peer `pid`, walking up past our CLI and launchers."""
    if pid is None or pid <= 0:
        return UNKNOWN
    if not _HAVE_PROCFS and proc == _PROC:
        return _pid_only(pid)
    current = _inspect(proc, pid)
    if current is None:
        return _pid_only(pid)
    chain: list[str] = []
    seen = {pid}
    while len(chain) < _MAX_DEPTH and _skippable(current, own_exe_markers):
        ppid = current.ppid
        if ppid is None or ppid <= 1 or ppid in seen:
            break  # reached init (or a loop): name the last process before it
        parent = _inspect(proc, ppid)
        if parent is None:
            break  # exited or unreadable
        chain.append(current.label)
        seen.add(ppid)
        current = parent
    return ClientIdentity(
        pid=pid,
        app_pid=current.pid,
        exe=current.exe,
        script=current.script,
        name=current.label,
        chain=tuple(chain),
    )


def _pid_only(pid: int) -> ClientIdentity:
    return ClientIdentity(pid=pid, app_pid=pid, exe=None, script=None, name=f"pid {pid}", chain=())


class ProcessStamp:
    """What stays put while a process runs the same program: its executable
    (device and inode, through the kernel's exe link, never argv) and its start
    time (field 22 of /proc/PID/stat).

    Taken when a client connects, checked on each request that uses the
    identity: a process that connected and then exec'd another program, or a
    pid that now names another process, no longer matches. The /proc/PID
    directory and its stat file stay open, so every later read is of that same
    process (reads fail once it has exited). Costs two fds per connection.
    """

    __slots__ = ("_dfd", "_stat_fd", "exe", "pid", "start")

    def __init__(self, pid: int, dfd: int | None, stat_fd: int | None) -> None:
        self.pid = pid
        self._dfd = dfd
        self._stat_fd = stat_fd
        self.exe = _exe_id(dfd) if dfd is not None else None
        self.start = _start_time(stat_fd) if stat_fd is not None else None

    @classmethod
    def take(cls, pid: int | None, *, proc: Path = _PROC) -> ProcessStamp | None:
        """None where there is no procfs (nothing to check against)."""
        if pid is None or pid <= 0 or (not _HAVE_PROCFS and proc == _PROC):
            return None
        try:
            dfd = os.open(proc / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return cls(pid, None, None)  # already gone: its identity says "pid N"
        try:
            stat_fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            os.close(dfd)
            return cls(pid, None, None)
        return cls(pid, dfd, stat_fd)

    def changed(self) -> str | None:
        """None while it is the same process running the same program; else why not.

        One stat of the exe link through the held directory: it fails once the
        process has exited (even if its pid is reused, the directory is the old
        process's), and names another inode once it has exec'd. The start time
        is read again only when that cannot tell: the exe is unreadable (a
        process that made itself non-dumpable, or one that just exited). The
        token path pays one syscall per request for this.
        """
        if self._dfd is None or self._stat_fd is None or self.start is None:
            return None  # it had exited before we looked: identified as "pid N", which no grant names
        exe = _exe_id(self._dfd)
        if exe is not None and exe == self.exe:
            return None
        if _start_time(self._stat_fd) != self.start:
            return "has exited"
        if exe != self.exe:
            return "has started another program since it connected"
        return None

    def close(self) -> None:
        for fd in (self._dfd, self._stat_fd):
            if fd is not None:
                os.close(fd)
        self._dfd = self._stat_fd = None


def _exe_id(dfd: int) -> tuple[int, int] | None:
    try:
        st = os.stat("exe", dir_fd=dfd)  # follows the kernel's link to the running binary
    except OSError:
        return None  # not dumpable, or gone: "unreadable" is itself the recorded value
    return st.st_dev, st.st_ino


def _start_time(stat_fd: int) -> int | None:
    """Field 22 of /proc/PID/stat: clock ticks after boot. None once the process is gone."""
    try:
        raw = os.pread(stat_fd, _STAT_CAP, 0)
    except OSError:
        return None
    try:
        return int(raw.rpartition(b")")[2].split(None, 20)[19])  # [0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def ancestors(pid: int | None, *, proc: Path = _PROC) -> tuple[int, ...]:
    """The parent, grandparent, ... of `pid` up to init, nearest first; () without procfs."""
    if pid is None or pid <= 0 or (not _HAVE_PROCFS and proc == _PROC):
        return ()
    chain: list[int] = []
    current = pid
    while len(chain) < 4 * _MAX_DEPTH:
        try:
            with open(proc / str(current) / "stat", "rb") as f:
                parsed = _parse_stat(f.read(_STAT_CAP))
        except OSError:
            break
        if parsed is None or parsed[1] <= 0 or parsed[1] in chain or parsed[1] == pid:
            break
        chain.append(parsed[1])
        current = parsed[1]
    return tuple(chain)


# -- one process --------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int | None
    comm: str | None
    exe: str | None
    exe_base: str | None  # basename of the kernel's exe link (not argv)
    argv: tuple[str, ...]
    family: str | None  # interpreter family, see _family
    script: str | None

    @property
    def prog(self) -> str:
        return (
            (_progname(self.argv[0]) if self.argv else None)
            or (os.path.basename(self.exe) if self.exe else None)
            or self.comm
            or f"pid {self.pid}"
        )

    @property
    def label(self) -> str:
        if self.script is None:
            return _printable(self.prog, _NAME_LIMIT)
        shown = self.script if self.script.startswith("-m ") else os.path.basename(self.script.rstrip("/"))
        return _printable(f"{self.prog} {shown or self.script}", _NAME_LIMIT)


def _inspect(proc: Path, pid: int) -> _Proc | None:
    """Read one /proc/PID through a directory fd, so every read is the same process."""
    try:
        dfd = os.open(proc / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        stat = _read_at(dfd, "stat", _STAT_CAP)
        raw_argv = _read_at(dfd, "cmdline", _CMDLINE_CAP)
        exe = _readlink_at(dfd, "exe")
        if stat is None and raw_argv is None and exe is None:
            return None  # gone, or nothing we may read
        comm, ppid = _parse_stat(stat) or (None, None)
        argv = _parse_cmdline(raw_argv or b"")
        exe_base = os.path.basename(exe) if exe else None
        family = _family(exe_base)
        if family is None and (exe is None or exe_base == "busybox") and argv:
            family = _family(_progname(argv[0]))
        script = _script_for(family, argv[1:]) if family else None
        cwd: str | None = None
        if script and not script.startswith("-m ") and not os.path.isabs(script):
            if not (family in ("deno", "bun") and _SPECIFIER.match(script)):
                cwd = _readlink_at(dfd, "cwd")
                if cwd:
                    script = os.path.normpath(os.path.join(cwd, script))
        if exe is None and argv and argv[0]:
            exe = argv[0]  # unverified: the process chose it
            if "/" in exe and not os.path.isabs(exe):
                cwd = cwd or _readlink_at(dfd, "cwd")
                if cwd:
                    exe = os.path.normpath(os.path.join(cwd, exe))
        return _Proc(pid, ppid, comm, exe, exe_base, argv, family, script)
    finally:
        os.close(dfd)


def _read_at(dfd: int, name: str, cap: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < cap:
            chunk = os.read(fd, cap - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink_at(dfd: int, name: str) -> str | None:
    try:
        target = os.readlink(name.encode(), dir_fd=dfd)
    except OSError:
        return None
    # A replaced binary (package upgrade) or removed cwd: keep the original path,
    # so an app that has been running since before an upgrade keeps its grants.
    target = target.removesuffix(b" (deleted)")
    return _decode(target) if target else None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _parse_stat(raw: bytes | None) -> tuple[str, int] | None:
    """(comm, ppid) from /proc/PID/stat: "pid (comm) state ppid ...".

    comm may hold spaces and ')' itself, so split on the last ')'.
    """
    if not raw:
        return None
    head, paren, tail = raw.rpartition(b")")
    start = head.find(b"(")
    if not paren or start < 0:
        return None
    fields = tail.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return _decode(head[start + 1 :]), int(fields[1])


def _parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """argv from NUL-separated /proc/PID/cmdline (trailing empty fields dropped)."""
    parts = raw.split(b"\0")
    while parts and not parts[-1]:
        parts.pop()
    return tuple(_decode(p) for p in parts)


def _progname(arg0: str) -> str | None:
    """Display name from argv[0]: a path's basename, or a process title's first word."""
    if not arg0.startswith(("/", "./", "../")):
        words = arg0.split()  # a title such as "npm exec foo" or "sshd: alice@pts/0"
        arg0 = words[0].rstrip(":") if words else ""
    return os.path.basename(arg0.rstrip("/")).lstrip("-") or None  # "-bash": a login shell


# -- interpreters ---------------------------------------------------------------

_PYTHON = re.compile(r"(?:python|pypy)(?:\d+(?:\.\d+)*)?[dmt]?")
_VERSIONED = re.compile(r"(ruby|perl|php)(?:\d+(?:\.\d+)*)?")
_SHELLS = frozenset({"sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "yash"})
_SPECIFIER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # https://..., npm:pkg, jsr:@x/y


def _family(base: str | None) -> str | None:
    if not base:
        return None
    if _PYTHON.fullmatch(base):
        return "python"
    if base in ("node", "nodejs"):
        return "node"
    if base in ("bun", "deno", "fish"):
        return base
    if base in _SHELLS:
        return "shell"
    match = _VERSIONED.fullmatch(base)
    return match.group(1) if match else None


def _script_for(family: str, args: Sequence[str]) -> str | None:
    """The script an interpreter runs: the first argument that is not an option."""
    return _PARSERS[family](args)


def _python(args: Sequence[str]) -> str | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if arg == "-":
            return None  # stdin
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        if not arg.startswith("-"):
            return arg
        for j in range(1, len(arg)):
            letter, rest = arg[j], arg[j + 1 :]
            if letter == "c":
                return None
            if letter == "m":
                module = rest or (args[i + 1] if i + 1 < len(args) else "")
                return f"-m {module}" if module else None
            if letter in "WX":  # -W arg, -Xdev
                if not rest:
                    i += 1
                break
        i += 1
    return None


_NODE_VALUE = frozenset(
    {
        "-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions",
        "--input-type", "--env-file", "--env-file-if-exists", "--title", "--watch-path",
        "--inspect-port", "--debug-port", "--disable-warning", "--dns-result-order",
        "--unhandled-rejections", "--redirect-warnings", "--openssl-config", "--icu-data-dir",
        "--cpu-prof-dir", "--cpu-prof-name", "--heap-prof-dir", "--heap-prof-name",
        "--diagnostic-dir", "--report-dir", "--report-directory", "--report-filename",
        "--report-signal", "--heapsnapshot-signal", "--stack-trace-limit", "--max-http-header-size",
        "--secure-heap", "--secure-heap-min", "--tls-cipher-list", "--tls-keylog", "--use-largepages",
        "--trace-event-categories", "--trace-event-file-pattern", "--experimental-policy",
        "--policy-integrity", "--experimental-default-type", "--experimental-config-file",
        "--localstorage-file", "--test-reporter", "--test-reporter-destination",
        "--test-name-pattern", "--test-skip-pattern",
    }
)  # fmt: skip
_NODE_NO_SCRIPT = frozenset({"-e", "--eval", "-p", "--print", "-pe", "-ep", "--run", "-v", "--version", "-h", "--help"})


def _node(args: Sequence[str]) -> str | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if arg in _NODE_NO_SCRIPT or arg == "-":
            return None
        if arg.startswith("-"):
            i += 2 if arg in _NODE_VALUE else 1  # --inspect[=port] and friends take "=" only
            continue
        return arg
    return None


def _subcommand_runner(value_options: frozenset[str], runs: frozenset[str]) -> Callable[[Sequence[str]], str | None]:
    """Deno and Bun: `tool [opts] run [opts] script`, or `tool script`; other subcommands have no script."""
    no_script = frozenset({"-e", "--eval", "-p", "--print"})

    def parse(args: Sequence[str]) -> str | None:
        i, seen_run = 0, False
        while i < len(args):
            arg = args[i]
            if arg == "--":
                return args[i + 1] if i + 1 < len(args) else None
            if arg in no_script:
                return None
            if arg.startswith("-"):
                i += 2 if arg in value_options else 1
                continue
            if not seen_run and arg in runs:
                seen_run = True
                i += 1
                continue
            if not seen_run and arg in _SUBCOMMANDS:
                return None
            return arg
        return None

    return parse


_SUBCOMMANDS = frozenset(
    {
        "add", "bench", "build", "check", "compile", "completions", "coverage", "create", "doc",
        "eval", "fmt", "info", "init", "install", "i", "jupyter", "link", "lint", "lsp", "outdated",
        "pm", "publish", "remove", "repl", "task", "test", "types", "uninstall", "unlink", "update",
        "upgrade", "x",
    }
)  # fmt: skip
_deno = _subcommand_runner(
    frozenset({"-c", "--config", "--import-map", "--lock", "--cert", "--location", "--seed",
               "-L", "--log-level", "--ext"}),
    frozenset({"run", "serve"}),
)  # fmt: skip
_bun = _subcommand_runner(
    frozenset({"-r", "--preload", "--require", "--import", "--cwd", "-c", "--config", "--env-file",
               "--tsconfig-override", "-d", "--define", "-l", "--loader", "--conditions", "--port"}),
    frozenset({"run"}),
)  # fmt: skip


def _letters(
    takes_value: str, takes_rest: str, numeric: str, no_script: str, value_longs: frozenset[str] = frozenset()
) -> Callable[[Sequence[str]], str | None]:
    """getopt-style short options (Ruby, Perl): `-lne code`, `-I dir`, `-Idir`, `-i.bak`, `-0777`."""

    def parse(args: Sequence[str]) -> str | None:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                return args[i + 1] if i + 1 < len(args) else None
            if arg == "-":
                return None
            if arg.startswith("--"):
                i += 2 if arg in value_longs else 1
                continue
            if not arg.startswith("-"):
                return arg
            j = 1
            while j < len(arg):
                letter, rest = arg[j], arg[j + 1 :]
                if letter in no_script:
                    return None
                if letter in takes_value:
                    if not rest:
                        i += 1
                    break
                if letter in takes_rest:
                    break
                j += 1
                if letter in numeric:
                    while j < len(arg) and arg[j].isdigit():
                        j += 1
            i += 1
        return None

    return parse


_ruby = _letters(
    "ICEr", "xFTWK", "0", "e",
    frozenset({"--enable", "--disable", "--encoding", "--external-encoding", "--internal-encoding", "--dump"}),
)  # fmt: skip
_perl = _letters("I", "MmxCdDiVFA", "l0", "eE")


def _php(args: Sequence[str]) -> str | None:
    value = frozenset({"-c", "-d", "-z", "-t", "--php-ini", "--define", "--zend-extension"})
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-f", "--file", "-F", "--process-file"):
            return args[i + 1] if i + 1 < len(args) else None
        if arg == "--" or arg in ("-r", "--run", "-R", "-B", "-E", "-a", "--interactive", "-S"):
            return None
        if arg.startswith("-"):
            i += 2 if arg in value else 1
            continue
        return arg
    return None


def _shell_parser(
    value_letters: str, value_longs: frozenset[str], command_longs: frozenset[str]
) -> Callable[[Sequence[str]], str | None]:
    """sh-like: `-c cmd` and `-s` have no script, `-o opt` / `+O opt` take a value."""

    def parse(args: Sequence[str]) -> str | None:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("--", "-"):
                return args[i + 1] if i + 1 < len(args) else None
            if arg.startswith("--"):
                name = arg.split("=", 1)[0]
                if name in command_longs:
                    return None
                i += 2 if arg in value_longs else 1
                continue
            if len(arg) > 1 and arg[0] in "-+":
                letters = arg[1:]
                if arg[0] == "-" and ("c" in letters or "s" in letters):
                    return None
                i += 1 + sum(letters.count(v) for v in value_letters)
                continue
            return arg
        return None

    return parse


_PARSERS: dict[str, Callable[[Sequence[str]], str | None]] = {
    "python": _python,
    "node": _node,
    "bun": _bun,
    "deno": _deno,
    "ruby": _ruby,
    "perl": _perl,
    "php": _php,
    "shell": _shell_parser("oO", frozenset({"--rcfile", "--init-file"}), frozenset()),
    "fish": _shell_parser(
        "Cdop", frozenset({"--init-command", "--debug", "--debug-output", "--profile"}), frozenset({"--command"})
    ),
}


# -- what to skip ---------------------------------------------------------------

# Executables that only start something else. Not sudo, su, doas or pkexec:
# walking across a privilege change would credit the wrong application.
_LAUNCHER_EXES = frozenset(
    {
        "env", "timeout", "nice", "nohup", "xargs", "script", "stdbuf", "setsid", "ionice",
        "uv", "uvx", "pipx", "npm", "npx", "pnpm", "pnpx", "yarn", "bunx", "corepack",
    }
)  # fmt: skip
# Package runners written in JS or Python, by the stem of the script the interpreter runs.
_RUNNER = re.compile(r"(?:npm|npx|pnpm|pnpx|yarn|corepack|bunx|pipx|uvx)(?:-cli|-[\d.]+)?")
_SCRIPT_SUFFIXES = (".js", ".cjs", ".mjs", ".py")


def _skippable(p: _Proc, own: OwnMarkers) -> bool:
    if _is_own(p, own) or p.family in ("shell", "fish"):
        return True
    if p.exe_base in _LAUNCHER_EXES:
        return True
    if p.family in ("node", "bun", "python") and p.script and not p.script.startswith("-m "):
        stem = os.path.basename(p.script)
        for suffix in _SCRIPT_SUFFIXES:
            stem = stem.removesuffix(suffix)
        if _RUNNER.fullmatch(stem):
            return True
    # Never by argv[0]: any process can retitle itself "npx" and inherit its parent's grants.
    return p.family == "bun" and p.script is None and "x" in p.argv[1:3]


def _is_own(p: _Proc, own: OwnMarkers) -> bool:
    if p.exe_base in own.names:  # a frozen build
        return True
    if p.family != "python" or not p.script:
        return False
    if p.script.startswith("-m "):
        return p.script[3:] in own.modules
    return os.path.basename(p.script) in own.names


# -- display ----------------------------------------------------------------------


def _printable(text: str, limit: int) -> str:
    """Escape what could forge a log line or spoof a dialog (newlines, bidi overrides, bad bytes)."""
    if not text.isprintable():
        out = []
        for ch in text:
            cp = ord(ch)
            if ch.isprintable():
                out.append(ch)
            elif 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte (surrogateescape)
                out.append(f"\\x{cp - 0xDC00:02x}")
            elif cp < 0x100:
                out.append(f"\\x{cp:02x}")
            elif cp < 0x10000:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
        text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_text(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
