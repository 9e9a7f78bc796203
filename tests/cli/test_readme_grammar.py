"""The README agrees with ``--help``: the grammar table's flags are exactly the commands' (a cell with a flag's use
means the command has it, ``–`` that it has not), and every ``fcnseg`` command line in the README parses, with no
deprecated spelling."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fcnseg.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _subparser(argv: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in argv:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _visible_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}


def _grammar_table() -> tuple[list[str], list[list[str]]]:
    section = README.split("\n## Commands and flags: one grammar\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines() if line.startswith("|")
    ]
    return rows[0][2:], [r for r in rows[2:]]


def test_the_grammar_table_is_what_the_parsers_accept():
    commands, rows = _grammar_table()
    assert commands == ["segment", "eval", "train", "export", "serve", "data check", "weights download"]
    assert len(rows) >= 10
    for idea, flag_cell, *cells in rows:
        flags = {f for quoted in re.findall(r"`([^`]+)`", flag_cell) for f in re.split(r"/", quoted)}
        for command, cell in zip(commands, cells, strict=True):
            options = _visible_options(_subparser(command.split()))
            if cell == "–":
                assert not flags & options, f"{idea}: {command} has {flags & options}, the table says it has not"
            else:
                assert flags <= options, f"{idea}: {command} lacks {flags - options}"


def _readme_command_lines() -> list[str]:
    """Every ``fcnseg ...`` command in the README's bash blocks (``torchrun ... -m fcnseg`` too), comments cut."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
            for part in re.split(r"&&|\|", line):
                words = shlex.split(part)
                if "fcnseg" in words and "..." not in words and not part.strip().startswith("pip"):
                    found.append(shlex.join(words[words.index("fcnseg") + 1 :]))
    return found


def test_the_readme_has_commands_to_check():
    lines = _readme_command_lines()
    assert len(lines) >= 30 and "segment --example -o example-out" in lines


@pytest.mark.parametrize("line", _readme_command_lines())
def test_every_readme_command_parses_in_the_new_grammar(line):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        build_parser().parse_args(shlex.split(line))  # SystemExit (exit 2) on a flag that does not exist
    assert "deprecated" not in err.getvalue(), err.getvalue()
