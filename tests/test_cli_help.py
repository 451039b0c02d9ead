"""Every command and option of the CLI has one line of help and a human metavar (never a Python type)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer

from markctl.cli import app, humanise, main

PYTHON_TYPE = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|Path)>")


def _commands() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(app)
    humanise(root)
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return found


COMMANDS = _commands()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "markctl" for p, _ in COMMANDS])
def test_help_is_human(path: list[str], command: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert (command.help or command.short_help or "").strip(), f"{path}: no help text"
    for param in command.params:
        assert (getattr(param, "help", None) or "").strip(), f"{path}: {param.name} has no help"
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert not PYTHON_TYPE.search(out), f"markctl {' '.join(path)} --help shows a Python type:\n{out}"
