"""Servers of a run's own: a RabbitMQ node and an embedded MongoDB that nothing else uses.

`emporium chaos` restarts and kills its servers; the dev stack and the test suite share the ones on
the default ports, so a fault run gets its own, on free ports, with data in a scratch directory,
and removes them at the end. Each is started in the foreground as a child process, so it can be
killed by PID (never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange")
RABBIT_HOME = Path("/var/lib/rabbitmq")  # Debian's: its .erlang.cookie lets rabbitmqctl reach every node
START_TIMEOUT_S = 90.0
STATISTICS_INTERVAL_MS = 1_000


class ServerFailed(RuntimeError):
    """A server did not start or stop as asked."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerFailed(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServerFailed(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _reap(process: subprocess.Popen, timeout_s: float) -> None:
    """Wait for a server asked to stop; kill -9 what is still there after the timeout."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own (Debian's rabbitmq-server), run as the rabbitmq user."""

    name: str
    directory: Path
    amqp_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@{socket.gethostname().split('.')[0]}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def _environment(self) -> dict[str, str]:
        listeners = (
            f'-rabbitmq_management tcp_config [{{ip,"127.0.0.1"}},{{port,{self.management_port}}}] '
            f'-rabbitmq_prometheus tcp_config [{{ip,"127.0.0.1"}},{{port,{self.prometheus_port}}}] '
            # Queue counts in the management API refresh every second (default 5 s): a run that waits
            # for its queues to empty sees it sooner.
            f"-rabbit collect_statistics_interval {STATISTICS_INTERVAL_MS}"
        )
        return {
            "HOME": str(RABBIT_HOME),
            "ERL_CRASH_DUMP": str(self.directory / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_SERVER_START_ARGS": listeners,
        }

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        shutil.chown(self.directory, "rabbitmq", "rabbitmq")
        for path in self.directory.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        assignments = " ".join(f"{key}='{value}'" for key, value in self._environment().items())
        command = f"cd {RABBIT_HOME} && exec env {assignments} /usr/lib/rabbitmq/bin/rabbitmq-server"
        log = (self.directory / "server.log").open("ab")
        as_rabbitmq = (
            ["su", "rabbitmq", "-s", "/bin/sh", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]
        )
        self.process = subprocess.Popen(as_rabbitmq, stdout=log, stderr=log, start_new_session=True)
        # rabbitmqctl cannot reach a node that is not yet registered: the AMQP listener comes last.
        _wait_for_port(self.amqp_port, START_TIMEOUT_S, f"RabbitMQ {self.node}", self.process)
        self.ctl("await_startup", timeout_s=START_TIMEOUT_S)
        _wait_for_port(self.management_port, START_TIMEOUT_S, f"RabbitMQ {self.node}'s management API")

    def ctl(self, *arguments: str, timeout_s: float = 60.0, tool: str = "rabbitmqctl") -> str:
        done = subprocess.run(
            [tool, "-q", "-n", self.node, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise ServerFailed(f"{tool} {' '.join(arguments)} on {self.node}: {done.stderr.strip()[:500]}")
        return done.stdout

    def join(self, seed: RabbitNode) -> None:
        """Join the seed's cluster, and take a replica of every quorum queue it already has."""
        self.ctl("stop_app")
        self.ctl("join_cluster", seed.node)
        self.ctl("start_app")
        self.ctl("await_startup", timeout_s=START_TIMEOUT_S)
        self.ctl("grow", self.node, "all", tool="rabbitmq-queues", timeout_s=START_TIMEOUT_S)

    def quorum_queues(self, vhost: str) -> list[QuorumQueue]:
        """The vhost's quorum queues, each with the node that leads it and the nodes that replicate it."""
        listed = json.loads(
            self.ctl("list_queues", "-p", vhost, "name", "type", "leader", "members", "--formatter", "json")
        )
        return [
            QuorumQueue(queue["name"], queue["leader"], tuple(queue["members"]))
            for queue in listed
            if queue["type"] == "quorum"
        ]

    def kill(self) -> None:
        """kill -9 of the node: what a crash does; started again, it rejoins its cluster from its data."""
        if self.process is not None:
            _kill_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def restart_app(self) -> None:
        """Stop and start the broker inside its node: every connection drops, queues stay."""
        self.ctl("stop_app")
        self.ctl("start_app")
        self.ctl("await_startup", timeout_s=START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ServerFailed, subprocess.TimeoutExpired):
            self.ctl("stop", timeout_s=60)
        _reap(self.process, 30)
        self.process = None


@dataclass(frozen=True)
class QuorumQueue:
    name: str
    leader: str
    members: tuple[str, ...]


@dataclass
class EmbeddedMongo:
    """SecantusDB (the embedded MongoDB) of its own, on a free port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            # Durable commits, abandoned transactions reaped in seconds: see ops/embedded_mongodb.py.
            [
                sys.executable,
                "-m",
                "ops.embedded_mongodb",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.directory / "data"),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        _wait_for_port(self.port, START_TIMEOUT_S, "the embedded MongoDB", self.process)

    def kill(self) -> None:
        """kill -9: what a crash does; its data must survive it."""
        if self.process is not None:
            _kill_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        _kill_group(self.process, signal.SIGTERM)
        _reap(self.process, 15)
        self.process = None


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)  # the RabbitMQ node runs as the rabbitmq user and must reach its own folder
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
