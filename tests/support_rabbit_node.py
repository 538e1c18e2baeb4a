"""A private RabbitMQ node for tests that break RabbitMQ itself (stop it, restart it, kill it).

The shared node on 127.0.0.1:5672 is used by every other test run on the machine, so nothing may
stop it. This starts a second node of the installed rabbitmq-server (Debian's 3.10) with its own
name, ports, data and logs in a temporary directory, and stops it (by its PID file) at the end.

The node and the CLI tools must share an Erlang cookie. As root, Debian's wrappers in /usr/sbin run
both as the ``rabbitmq`` user (whose ~/.erlang.cookie the shared node uses too); as anyone else the
scripts run as that user, with that user's cookie (Erlang makes one on the first start).

Only the AMQP listener is opened (on loopback); plugins are the caller's choice, the consistent-hash
exchange by default (the actors' runtime needs it). Management and Prometheus would need ports of
their own: give them with ``management_port``/``prometheus_port`` when a test wants them.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# As root, Debian's wrappers switch to the rabbitmq user; the scripts behind them run as anyone.
_SCRIPTS = Path("/usr/sbin") if os.geteuid() == 0 else Path("/usr/lib/rabbitmq/bin")
_NODE_USER = "rabbitmq"
START_TIMEOUT_S = 90
CTL_TIMEOUT_S = 60
DEFAULT_PLUGINS = ("rabbitmq_consistent_hash_exchange",)


class RabbitNodeError(RuntimeError):
    """A rabbitmqctl command failed; the message has its output and the end of the node's log."""


def free_port() -> int:
    """A loopback port nobody listens on now (taken by the node a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RabbitNode:
    name: str
    amqp_port: int
    base: Path

    @property
    def url(self) -> str:
        """The AMQP URL of the node's default vhost (guest may connect over loopback only)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / "node.pid"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / f"{self.name}.log"

    async def ctl(self, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
        """Run ``rabbitmqctl -n <node> args...``; its output, or RabbitNodeError."""
        return await _run(self, "rabbitmqctl", "-n", self.name, *args, timeout_s=timeout_s)

    async def stop_app(self) -> None:
        """Stop RabbitMQ on the node (the Erlang VM stays): every client is disconnected."""
        await self.ctl("stop_app")

    async def start_app(self) -> None:
        """Start RabbitMQ again after ``stop_app``; returns once it accepts connections."""
        await self.ctl("start_app")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no node log: {exc})"


async def _run(
    node: RabbitNode, script: str, *args: str, timeout_s: float, env: dict[str, str] | None = None
) -> str:
    process = await asyncio.create_subprocess_exec(
        str(_SCRIPTS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()  # the CLI process this started, by its handle
        await process.wait()
        raise RabbitNodeError(
            f"{script} {' '.join(args)}: no answer within {timeout_s}s\n{node.log_tail()}"
        ) from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RabbitNodeError(
            f"{script} {' '.join(args)} exited {process.returncode}:\n{text}\n{node.log_tail()}"
        )
    return text


def _private_directory() -> Path:
    """A fresh directory the node's user can write (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="emporium-rabbit-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(_NODE_USER)
        os.chown(base, user.pw_uid, user.pw_gid)
    return base


def _node_environment(node: RabbitNode, *, plugins: tuple[str, ...], start_args: str) -> dict[str, str]:
    plugins_file = node.base / "enabled_plugins"
    plugins_file.write_text(f"[{','.join(plugins)}].\n")
    os.chmod(plugins_file, 0o644)
    return {
        **os.environ,
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(node.amqp_port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(node.base / "log"),
        "RABBITMQ_PID_FILE": str(node.pid_file),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins_file),
        # Not the machine's /etc/rabbitmq/rabbitmq.conf: this node is configured here only.
        "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
        "RABBITMQ_SERVER_START_ARGS": start_args,
    }


def _listener_args(management_port: int | None, prometheus_port: int | None) -> str:
    args = []
    if management_port is not None:
        args.append(f'-rabbitmq_management listener [{{port,{management_port}}},{{ip,"127.0.0.1"}}]')
    if prometheus_port is not None:
        args.append(f'-rabbitmq_prometheus tcp_config [{{port,{prometheus_port}}},{{ip,"127.0.0.1"}}]')
    return " ".join(args)


@asynccontextmanager
async def private_rabbit_node(
    *,
    plugins: tuple[str, ...] = DEFAULT_PLUGINS,
    management_port: int | None = None,
    prometheus_port: int | None = None,
) -> AsyncIterator[RabbitNode]:
    """A RabbitMQ node of its own, started and awaited; stopped and its data removed at the end."""
    if not (_SCRIPTS / "rabbitmq-server").exists():
        pytest.skip(f"rabbitmq-server is not installed ({_SCRIPTS}); ops/dev.sh installs it")
    node = RabbitNode(
        name=f"emporium-test-{uuid.uuid4().hex[:8]}@localhost",
        amqp_port=free_port(),
        base=_private_directory(),
    )
    env = _node_environment(
        node, plugins=plugins, start_args=_listener_args(management_port, prometheus_port)
    )
    try:
        await _run(node, "rabbitmq-server", "-detached", timeout_s=CTL_TIMEOUT_S, env=env)
        # `wait` follows the PID file, so it does not fail while the node is still registering.
        await node.ctl(
            "wait", str(node.pid_file), "--timeout", str(START_TIMEOUT_S), timeout_s=START_TIMEOUT_S
        )
        yield node
    finally:
        await _stop(node)
        shutil.rmtree(node.base)


async def _stop(node: RabbitNode) -> None:
    """Stop the node cleanly; if the CLI cannot, end the node's own process (by its PID file)."""
    if not node.pid_file.exists():
        return  # it never got as far as running
    try:
        await node.ctl("stop", str(node.pid_file))
    except RabbitNodeError:
        pid = int(node.pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        raise
