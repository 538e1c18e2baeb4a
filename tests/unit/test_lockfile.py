"""uv.lock is what gets installed, and it agrees with pyproject.toml: the tests' venv (ops/dev.sh)
and the image (Dockerfile) both install exactly the locked set with the locked uv, so production runs
the versions CI tested."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
DEV_SH = (ROOT / "ops" / "dev.sh").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def locked_version(name: str) -> str:
    (version,) = {package["version"] for package in LOCK["package"] if package["name"] == name}
    return version


def test_the_lock_matches_pyproject():
    # Offline: the check compares the lock with pyproject.toml's requirements and needs no index.
    done = subprocess.run(
        [sys.executable, "-m", "uv", "lock", "--check", "--offline", "--python", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `.venv/bin/uv lock` and commit uv.lock\n"
        f"{done.stdout}{done.stderr}"
    )


def test_the_set_up_installs_the_test_and_embedded_sets_from_the_lock():
    sync = DEV_SH[DEV_SH.index(".venv/bin/uv sync") :].split("||")[0]
    assert "--locked" in sync and "--extra test" in sync and "--extra embedded" in sync
    # A changed lock reinstalls the venv.
    assert "cat pyproject.toml uv.lock | sha256sum" in DEV_SH
    assert "pip install -e" not in DEV_SH


def test_the_image_installs_the_runtime_set_from_the_lock():
    assert re.search(r"^COPY [^\n]*\buv\.lock\b", DOCKERFILE, re.M)
    (sync,) = re.findall(r"^RUN uv sync\b.*$", DOCKERFILE, re.M)
    assert "--locked" in sync and "--no-editable" in sync
    assert "--extra" not in sync and "--all-extras" not in sync
    assert not re.search(r"pip install (?!uv==)", DOCKERFILE), "the image installs only from uv.lock"


def test_the_set_up_and_the_image_use_the_locked_uv():
    uv = locked_version("uv")
    assert re.search(rf"^UV_VERSION={re.escape(uv)}\b", DEV_SH, re.M)
    assert re.search(rf"^RUN pip install uv=={re.escape(uv)}$", DOCKERFILE, re.M)
