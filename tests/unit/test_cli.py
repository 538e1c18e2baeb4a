"""The emporium command as a user meets it: a version, help for everything it takes, and a start that
imports only what the command run needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ops.cli import SUB_APPS, LazySubApp, app

ROOT = Path(__file__).resolve().parents[2]


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    if isinstance(command, LazySubApp):
        command = command.load()
    yield " ".join(("emporium", *path)), command
    if hasattr(command, "commands"):  # a group (typer's own click)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"emporium {version('emporium')}"


def test_every_command_option_and_argument_has_help() -> None:
    undocumented = [
        f"{path} {param.name}"
        for path, command in _commands(typer.main.get_command(app))
        for param in command.params
        if not getattr(param, "help", None)
    ]
    assert undocumented == []
    assert len(list(_commands(typer.main.get_command(app)))) > 20  # the walk reached the subcommands


# `emporium --help` in a fresh interpreter, then the modules it imported, as the last line.
_HELP_AND_MODULES = """
import json, sys
from ops.cli import app
try:
    app(["--help"], prog_name="emporium")
except SystemExit as exit:
    assert exit.code == 0, exit.code
print(json.dumps(sorted(sys.modules)))
"""


def test_help_lists_every_command_without_importing_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_AND_MODULES],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # one line per command
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    *help_lines, modules_line = done.stdout.splitlines()
    modules = json.loads(modules_line)
    heavy = [m for m in modules if m.split(".")[0] in {"actors", "uvicorn", "faststream", "fastapi"}]
    assert heavy == []
    listed = "\n".join(help_lines)
    for name, (_, help) in SUB_APPS.items():
        assert f" {name} " in listed and help in listed
    assert " run " in listed and " actor " in listed


@pytest.mark.parametrize("name", list(SUB_APPS))
def test_a_sub_app_keeps_its_help_and_commands(name: str) -> None:
    module, help = SUB_APPS[name]
    group = LazySubApp(name, module, help).load()
    assert group.help == help  # what `emporium --help` shows is the sub-app's own
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert help in result.output
    assert group.commands and all(f" {command} " in result.output for command in group.commands)


def test_an_unknown_sub_app_command_fails_with_usage_on_stderr() -> None:
    result = CliRunner().invoke(app, ["dlq", "no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.stderr and result.stdout == ""
