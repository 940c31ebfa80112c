"""`--help` is complete: every command says what it does in one line, every
argument and option says what it takes (issue 10, item 13)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

from broker.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_command_argument_and_option_has_help():
    missing = []
    for path, parser in _parsers(build_parser(), "mcp-token-broker"):
        if path != "mcp-token-broker" and not (parser.description or "").strip():
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}: no line in the command list")
    assert missing == []


def test_command_list_has_one_line_per_command(cli):
    r = cli("--help", env={"COLUMNS": "80"})
    assert r.returncode == 0
    section = r.stdout.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    listing = section.splitlines()[1:]  # after the COMMAND line itself
    commands = [line.split()[0] for line in listing if line.strip()]
    # A wrapped description leaves a line that starts with spaces and no command.
    assert all(line.startswith("    ") and line[4] != " " for line in listing), listing
    assert {"add", "connect", "token", "headers", "proxy", "approve", "gui"} <= set(commands)
    # Device login exists: the summary no longer says "through the browser" only.
    (connect,) = [line for line in listing if line.split()[0] == "connect"]
    assert connect.split(None, 1)[1] == "log in (browser, or another device with --device)", connect


def test_subcommand_help_describes_the_command(cli):
    r = cli("connect", "--help")
    assert r.returncode == 0
    assert "log in (browser, or another device with --device)" in r.stdout
    assert "the connection's name" in r.stdout


def test_gui_help_names_its_options_not_an_internal_list(cli):
    r = cli("gui", "--help")
    assert r.returncode == 0
    assert "gui_args" not in r.stdout
    assert "--minimized" in r.stdout and "open the desktop app" in r.stdout


def test_building_the_parser_leaves_the_import_command_unloaded():
    # Every full-CLI command builds the parser: declaring `import`'s options must
    # not load the importing package (config readers, tomllib, adoption, OAuth).
    code = (
        "import sys\n"
        "from broker.cli.main import build_parser\n"
        "build_parser().parse_args(['import', '--dry-run'])\n"
        "heavy = ('broker.importing', 'broker.cli.import_cmd', 'broker.service.adoption', 'tomllib')\n"
        "print(' '.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
