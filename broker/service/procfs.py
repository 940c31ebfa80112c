"""Reading one process from /proc: its argv, executable, parent and start time.

Linux only. Every read goes through a directory fd of /proc/PID, so all of
them are of the same process, and every read may race with the process
exiting: we return what we learned and never raise. `broker.service.argv`
reads the argv; `broker.service.identity` decides whom to name.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .argv import family, is_specifier, progname, script_for

__all__ = ["HAVE_PROCFS", "PROC", "Proc", "ProcessStamp", "ancestors", "inspect", "parse_cmdline", "parse_stat"]

PROC = Path("/proc")
HAVE_PROCFS = sys.platform.startswith("linux")
_MAX_ANCESTORS = 64
_CMDLINE_CAP = 64 * 1024
_STAT_CAP = 4096


@dataclass(frozen=True)
class Proc:
    """What /proc said about one process."""

    pid: int
    ppid: int | None
    comm: str | None
    exe: str | None
    exe_base: str | None  # basename of the kernel's exe link (not argv)
    argv: tuple[str, ...]
    family: str | None  # interpreter family, see `broker.service.argv.family`
    script: str | None

    @property
    def prog(self) -> str:
        return (
            (progname(self.argv[0]) if self.argv else None)
            or (os.path.basename(self.exe) if self.exe else None)
            or self.comm
            or f"pid {self.pid}"
        )


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
    def take(cls, pid: int | None, *, proc: Path = PROC) -> ProcessStamp | None:
        """None where there is no procfs (nothing to check against)."""
        if pid is None or pid <= 0 or (not HAVE_PROCFS and proc == PROC):
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


def ancestors(pid: int | None, *, proc: Path = PROC) -> tuple[int, ...]:
    """The parent, grandparent, ... of `pid` up to init, nearest first; () without procfs."""
    if pid is None or pid <= 0 or (not HAVE_PROCFS and proc == PROC):
        return ()
    chain: list[int] = []
    current = pid
    while len(chain) < _MAX_ANCESTORS:
        try:
            with open(proc / str(current) / "stat", "rb") as f:
                parsed = parse_stat(f.read(_STAT_CAP))
        except OSError:
            break
        if parsed is None or parsed[1] <= 0 or parsed[1] in chain or parsed[1] == pid:
            break
        chain.append(parsed[1])
        current = parsed[1]
    return tuple(chain)


def inspect(proc: Path, pid: int) -> Proc | None:
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
        comm, ppid = parse_stat(stat) or (None, None)
        argv = parse_cmdline(raw_argv or b"")
        exe_base = os.path.basename(exe) if exe else None
        kind = family(exe_base)
        if kind is None and (exe is None or exe_base == "busybox") and argv:
            kind = family(progname(argv[0]))
        script = script_for(kind, argv[1:]) if kind else None
        cwd: str | None = None
        if script and not script.startswith("-m ") and not os.path.isabs(script):
            if not (kind in ("deno", "bun") and is_specifier(script)):
                cwd = _readlink_at(dfd, "cwd")
                if cwd:
                    script = os.path.normpath(os.path.join(cwd, script))
        if exe is None and argv and argv[0]:
            exe = argv[0]  # unverified: the process chose it
            if "/" in exe and not os.path.isabs(exe):
                cwd = cwd or _readlink_at(dfd, "cwd")
                if cwd:
                    exe = os.path.normpath(os.path.join(cwd, exe))
        return Proc(pid, ppid, comm, exe, exe_base, argv, kind, script)
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


def parse_stat(raw: bytes | None) -> tuple[str, int] | None:
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


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """argv from NUL-separated /proc/PID/cmdline (trailing empty fields dropped)."""
    parts = raw.split(b"\0")
    while parts and not parts[-1]:
        parts.pop()
    return tuple(_decode(p) for p in parts)
