"""Which script an interpreter runs, read from its argv: one table-driven scanner.

Pure: no /proc, no I/O. `broker.service.procfs` reads a process's argv and
asks `family` and `script_for`; `broker.service.identity` decides what to
skip. Every interpreter is one `Syntax` row in `SYNTAX`, read by the one
loop in `script_for`:

    argument                         meaning                     table field
    ───────────────────────────────  ──────────────────────────  ────────────
    `--` (`-` for shells, `-f` php)  the next one is the script  script_next
    `-e`, `--eval`, `-c` ...         no script (code, stdin)     no_script, stop_longs, Letter.STOP
    `--require X`, `-r X`            an option and its value     value_words
    `-lne`, `-Idir`, `-0777`, `+o x` getopt-style letters        letters, prefixes
    `run`, `install` (deno, bun)     a subcommand                runs, subcommands
    anything else                    the script

The scan only names what the process says it runs: any process can set its
own argv, so this is attribution for consent, not a proof.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = ["SYNTAX", "Letter", "Syntax", "family", "is_specifier", "progname", "script_for"]


class Letter(Enum):
    """What one letter of a getopt-style cluster does (a letter not in the table is a flag)."""

    STOP = "stop"  # no script follows: `python -c`, `ruby -e`, `sh -c`/`-s` (not `+c`)
    MODULE = "module"  # `python -m mod` / `-mmod`: the "script" is "-m mod"
    VALUE = "value"  # a value, attached or the next argument: `-I dir`, `-Idir`, `-W error`
    ATTACHED = "attached"  # an optional attached value, never the next argument: `-i.bak`, `-x`
    DIGITS = "digits"  # optional digits after it: `-0777`, `-l`
    NEXT = "next"  # the next argument, never attached; the cluster goes on: `sh -oO a b`


@dataclass(frozen=True)
class Syntax:
    """How one interpreter's command line names its script."""

    script_next: frozenset[str] = frozenset({"--"})
    no_script: frozenset[str] = frozenset()  # whole arguments
    stop_longs: frozenset[str] = frozenset()  # long options, also as `--name=value`
    value_words: frozenset[str] = frozenset()  # options that take the next argument
    #: getopt-style clusters; None: every argument starting with "-" is one whole option.
    letters: Mapping[str, Letter] | None = None
    prefixes: str = "-"  # what starts a cluster; shells also take `+o opt`
    runs: frozenset[str] = frozenset()  # `deno run script`
    subcommands: frozenset[str] = frozenset()  # `deno fmt`: no script


def _letters(**kinds: str) -> dict[str, Letter]:
    """`_letters(stop="c", value="WX")` -> {"c": Letter.STOP, "W": Letter.VALUE, ...}."""
    return {letter: Letter[kind.upper()] for kind, letters in kinds.items() for letter in letters}


def script_for(family: str, args: Sequence[str]) -> str | None:
    """The script an interpreter of `family` runs, given argv[1:]; None if it runs none."""
    syntax = SYNTAX[family]
    i, seen_run = 0, False
    while i < len(args):
        arg = args[i]
        if arg in syntax.script_next:
            return args[i + 1] if i + 1 < len(args) else None
        if arg in syntax.no_script:
            return None
        if arg.startswith("--") or (syntax.letters is None and arg.startswith("-")):
            if arg.split("=", 1)[0] in syntax.stop_longs:
                return None
            i += 2 if arg in syntax.value_words else 1
            continue
        if syntax.letters is not None and len(arg) > 1 and arg[0] in syntax.prefixes:
            j = 1
            while j < len(arg):
                letter, rest = arg[j], arg[j + 1 :]
                kind = syntax.letters.get(letter)
                if kind is Letter.STOP and arg[0] == "-":  # `+c` turns an option off
                    return None
                if kind is Letter.MODULE:
                    module = rest or (args[i + 1] if i + 1 < len(args) else "")
                    return f"-m {module}" if module else None
                if kind is Letter.VALUE:
                    if not rest:
                        i += 1
                    break
                if kind is Letter.ATTACHED:
                    break
                if kind is Letter.NEXT:
                    i += 1
                j += 1
                if kind is Letter.DIGITS:
                    while j < len(arg) and arg[j].isdigit():
                        j += 1
            i += 1
            continue
        if not seen_run and arg in syntax.runs:
            seen_run = True
            i += 1
            continue
        if not seen_run and arg in syntax.subcommands:
            return None
        return arg
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
# Deno's and Bun's subcommands that run no script (`deno fmt`, `bun install`).
_SUBCOMMANDS = frozenset(
    {
        "add", "bench", "build", "check", "compile", "completions", "coverage", "create", "doc",
        "eval", "fmt", "info", "init", "install", "i", "jupyter", "link", "lint", "lsp", "outdated",
        "pm", "publish", "remove", "repl", "task", "test", "types", "uninstall", "unlink", "update",
        "upgrade", "x",
    }
)  # fmt: skip
_EVAL = frozenset({"-e", "--eval", "-p", "--print"})

SYNTAX: Mapping[str, Syntax] = {
    "python": Syntax(
        no_script=frozenset({"-"}),
        value_words=frozenset({"--check-hash-based-pycs"}),
        letters=_letters(stop="c", module="m", value="WX"),
    ),
    "node": Syntax(
        no_script=_EVAL | {"-pe", "-ep", "--run", "-v", "--version", "-h", "--help", "-"},
        value_words=_NODE_VALUE,  # --inspect[=port] and friends take "=" only
    ),
    "deno": Syntax(
        no_script=_EVAL,
        value_words=frozenset(
            {"-c", "--config", "--import-map", "--lock", "--cert", "--location", "--seed", "-L", "--log-level", "--ext"}
        ),
        runs=frozenset({"run", "serve"}),
        subcommands=_SUBCOMMANDS,
    ),  # fmt: skip
    "bun": Syntax(
        no_script=_EVAL,
        value_words=frozenset(
            {
                "-r",
                "--preload",
                "--require",
                "--import",
                "--cwd",
                "-c",
                "--config",
                "--env-file",
                "--tsconfig-override",
                "-d",
                "--define",
                "-l",
                "--loader",
                "--conditions",
                "--port",
            }
        ),
        runs=frozenset({"run"}),
        subcommands=_SUBCOMMANDS,
    ),  # fmt: skip
    "ruby": Syntax(
        no_script=frozenset({"-"}),
        value_words=frozenset(
            {"--enable", "--disable", "--encoding", "--external-encoding", "--internal-encoding", "--dump"}
        ),
        letters=_letters(stop="e", value="ICEr", attached="xFTWK", digits="0"),
    ),  # fmt: skip
    "perl": Syntax(
        no_script=frozenset({"-"}),
        letters=_letters(stop="eE", value="I", attached="MmxCdDiVFA", digits="l0"),
    ),
    "php": Syntax(
        script_next=frozenset({"-f", "--file", "-F", "--process-file"}),
        no_script=frozenset({"--", "-r", "--run", "-R", "-B", "-E", "-a", "--interactive", "-S"}),
        value_words=frozenset({"-c", "-d", "-z", "-t", "--php-ini", "--define", "--zend-extension"}),
    ),
    "shell": Syntax(  # sh, bash, dash, zsh ...: `-c cmd` and `-s` have no script; `-o opt`, `+O opt`
        script_next=frozenset({"--", "-"}),
        value_words=frozenset({"--rcfile", "--init-file"}),
        letters=_letters(stop="cs", next="oO"),
        prefixes="-+",
    ),
    "fish": Syntax(
        script_next=frozenset({"--", "-"}),
        stop_longs=frozenset({"--command"}),
        value_words=frozenset({"--init-command", "--debug", "--debug-output", "--profile"}),
        letters=_letters(stop="cs", next="Cdop"),
        prefixes="-+",
    ),
}

_PYTHON = re.compile(r"(?:python|pypy)(?:\d+(?:\.\d+)*)?[dmt]?")
_VERSIONED = re.compile(r"(ruby|perl|php)(?:\d+(?:\.\d+)*)?")
_SHELLS = frozenset({"sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "yash"})
_SPECIFIER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # https://..., npm:pkg, jsr:@x/y


def family(base: str | None) -> str | None:
    """The interpreter family (a key of `SYNTAX`) of an executable's basename, or None."""
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


def is_specifier(script: str) -> bool:
    """Deno and Bun run URLs and package specifiers (`npm:pkg`), not only paths."""
    return _SPECIFIER.match(script) is not None


def progname(arg0: str) -> str | None:
    """Display name from argv[0]: a path's basename, or a process title's first word."""
    if not arg0.startswith(("/", "./", "../")):
        words = arg0.split()  # a title such as "npm exec foo" or "sshd: alice@pts/0"
        arg0 = words[0].rstrip(":") if words else ""
    return os.path.basename(arg0.rstrip("/")).lstrip("-") or None  # "-bash": a login shell
