"""ops/dev.sh refuses a second `run` beside one already serving, before it sets anything up."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_run_is_refused_while_the_edge_port_is_taken():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", 8000))
            listener.listen()
        except OSError:
            pass  # something else holds it already: the script must refuse all the same
        done = subprocess.run(
            ["bash", "ops/dev.sh", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert "already listens on 127.0.0.1:8000" in done.stderr
