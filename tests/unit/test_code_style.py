"""The code keeps one style and declares what it uses: ruff's lint rules and formatter, and deptry
(every import declared in pyproject.toml, every dependency used), all with pyproject.toml's settings."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "--no-cache", "."],
        ["ruff", "format", "--check", "--no-cache", "."],
        ["deptry", "."],
    ],
    ids=["lint", "format", "dependencies"],
)
def test_the_checker_finds_nothing_to_change(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
