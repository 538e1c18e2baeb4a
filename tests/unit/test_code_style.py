"""The code keeps one style, is typed and declares what it uses: ruff's lint rules and formatter,
mypy with pydantic's plugin, and deptry (every import declared in pyproject.toml, every dependency
used), all with pyproject.toml's settings."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Above pytest's 120 s: mypy without its cache took 16 s on two cores already loaded (load 3), and
# the full suite may run beside it.
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "--no-cache", "."],
        ["ruff", "format", "--check", "--no-cache", "."],
        ["deptry", "."],
        ["mypy"],
    ],
    ids=["lint", "format", "dependencies", "types"],
)
def test_the_checker_finds_nothing_to_change(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
