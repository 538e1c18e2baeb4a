"""The emporium command as a user meets it: a version, and help for everything it takes."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import typer
from typer.testing import CliRunner

from ops.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
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
