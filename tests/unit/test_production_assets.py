"""The least-privilege production assets (ops/production.py): committed as generated, and as tight as
the code allows. What RabbitMQ does with them is tested in tests/integration/test_least_privilege.py."""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import brokers.contracts  # noqa: F401  (registers every contract)
from actors.registry import ACTORS
from brokers.contracts import events_of
from brokers.envelope import REGISTRY, Event, Kind
from brokers.topology import COMMANDS, EVENTS, MOVES, QUERIES, UNROUTED_EVENTS, work_queue_names
from edge.events import sse_queue_name
from ops import production
from ops.production import (
    DEFINITIONS,
    EDGE,
    MONGODB_USERS,
    SET_PASSWORDS,
    committed_assets,
    default_settings,
    definitions,
)

SETTINGS = default_settings()
DEFS = definitions(SETTINGS)
PERMISSIONS = {p["user"]: p for p in DEFS["permissions"]}
TOPICS = {(t["user"], t["exchange"]): t for t in DEFS["topic_permissions"]}
EVENT_TYPES = {t for t, contract in REGISTRY.items() if contract.KIND is Kind.EVENT}
DEFAULT_EXCHANGE = "amq.default"
SSE_QUEUE = sse_queue_name()  # the edge's SSE queue


def all_queue_names() -> set[str]:
    """Every queue name in use: with the default settings, with test-like settings (other retry
    delays), the parking queue, and a queue named like the edge's SSE queue."""
    other = SETTINGS.model_copy(
        update={"emporium_retry_delays_ms": (200, 400, 800), "emporium_order_deadline_ms": 700}
    )
    named = {queue["name"] for s in (SETTINGS, other) for queue in definitions(s)["queues"]}
    return named | {UNROUTED_EVENTS.name, SSE_QUEUE}


def matching(regex: str, candidates: set[str]) -> set[str]:
    # RabbitMQ searches the regex in the name (it is not implicitly anchored): re.search, like it.
    return {name for name in candidates if re.search(regex, name)}


def own_queues(actor: str) -> set[str]:
    # A partitioned actor's replicas also consume the queue that counts them.
    replicas = {f"{actor}.replicas"} if len(work_queue_names(actor)) > 1 else set()
    return {*work_queue_names(actor), f"{actor}.reads", *replicas}


def test_the_committed_assets_are_what_the_code_generates() -> None:
    # A contract or topology change shows as a diff here: run `emporium production write`.
    for path, text in committed_assets().items():
        assert path.read_text() == text, f"{path} is stale: run `emporium production write`"


def test_the_password_script_is_executable() -> None:
    assert os.access(SET_PASSWORDS, os.X_OK)


def test_every_actor_and_the_edge_has_a_user_and_nothing_else_does() -> None:
    expected = {*ACTORS, EDGE}
    assert {u["name"] for u in DEFS["users"]} == expected
    assert set(PERMISSIONS) == expected
    assert {user for user, _ in TOPICS} == expected
    assert all(u["tags"] == [] for u in DEFS["users"])


def test_no_password_nor_hash_is_committed() -> None:
    for user in json.loads(DEFINITIONS.read_text())["users"]:
        assert set(user) == {"name", "tags"}
    for path in (DEFINITIONS, SET_PASSWORDS, MONGODB_USERS):
        assert not re.search(r"password_hash|hashing_algorithm|pwd\s*:\s*[\"']", path.read_text())


def test_the_definitions_hold_every_declared_queue_exchange_and_binding() -> None:
    queues = {q["name"]: q["arguments"] for q in DEFS["queues"]}
    for actor in ACTORS.values():
        topology = production.topology_of(actor, SETTINGS)
        for spec in topology.queues:
            assert queues[spec.name] == spec.arguments
        for spec in topology.routed_to:
            for exchange, key in spec.bindings:
                assert {"source": exchange, "destination": spec.name, "routing_key": key} in [
                    {k: b[k] for k in ("source", "destination", "routing_key")} for b in DEFS["bindings"]
                ]
    assert queues[UNROUTED_EVENTS.name] == UNROUTED_EVENTS.arguments
    assert {e["name"] for e in DEFS["exchanges"]} == {
        "emporium.unrouted",
        "emporium.commands",
        "emporium.events",
        "emporium.queries",
        "emporium.dead-letters",
        "emporium.moves",
        "inventory.partitions",
    }


@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_an_actor_reads_exactly_its_own_work_and_reads_queues(actor: str) -> None:
    names = all_queue_names()
    assert own_queues(actor) <= names
    assert matching(PERMISSIONS[actor]["read"], names) == own_queues(actor)
    # Prefixes of one another (order/orders) are no loophole: the regex is anchored at both ends.
    assert not matching(PERMISSIONS[actor]["read"], {f"{actor}s", f"{actor}.dlq", f"x{actor}", actor[:-1]})


@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_an_actor_declares_nothing_and_writes_only_to_the_exchanges_it_publishes_to(actor: str) -> None:
    exchanges = {e["name"] for e in DEFS["exchanges"]} | {DEFAULT_EXCHANGE, "amq.topic", "amq.direct"}
    needed = {MOVES.name, DEFAULT_EXCHANGE} | ({EVENTS.name} if events_of(actor) else set())
    assert matching(PERMISSIONS[actor]["write"], exchanges) == needed
    assert not matching(PERMISSIONS[actor]["write"], all_queue_names())
    assert not matching(PERMISSIONS[actor]["configure"], exchanges | all_queue_names())


@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_an_actor_publishes_its_own_event_types_only(actor: str) -> None:
    allowed = matching(TOPICS[actor, EVENTS.name]["write"], EVENT_TYPES)
    assert allowed == set(events_of(actor))
    for other in set(ACTORS) - {actor}:
        assert not allowed & set(events_of(other))


@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_an_actor_moves_messages_into_its_own_delay_and_dead_letter_queues_only(actor: str) -> None:
    moves = matching(TOPICS[actor, MOVES.name]["write"], all_queue_names())
    delays = {spec.name for spec in production.topology_of(ACTORS[actor], SETTINGS).delays}
    assert moves == delays | {f"{actor}.dlq"}
    assert all(name.startswith(f"{actor}.") for name in moves)


def test_topic_read_permissions_grant_nothing_to_actors() -> None:
    # RabbitMQ checks a binding's routing key against them; actors bind nothing.
    assert all(
        TOPICS[actor, exchange]["read"] == "^$" for actor in ACTORS for exchange in (EVENTS.name, MOVES.name)
    )


def test_the_edge_sends_commands_and_queries_reads_dead_letters_and_replays_into_work_queues() -> None:
    from edge.events import SAGA_EVENT_TYPES, VIEW_EVENT_TYPES

    edge = PERMISSIONS[EDGE]
    names = all_queue_names()
    sse_queue = {SSE_QUEUE}
    assert not matching(
        edge["configure"],
        {"amq.gen-JzTY20BRgKO-HjmUJj0wLg", "amq_" + uuid.uuid4().hex, "edge.sse.sneaky", SSE_QUEUE + "0"},
    )
    exchanges = {e["name"] for e in DEFS["exchanges"]} | {DEFAULT_EXCHANGE}
    assert matching(edge["configure"], names | exchanges) == sse_queue
    assert matching(edge["write"], exchanges) == {COMMANDS.name, QUERIES.name, MOVES.name}
    assert matching(edge["write"], names) == sse_queue
    assert matching(edge["read"], exchanges) == {EVENTS.name}
    assert matching(edge["read"], names) == sse_queue | {f"{actor}.dlq" for actor in ACTORS}
    work_queues = {queue for actor in ACTORS for queue in work_queue_names(actor)}
    assert matching(TOPICS[EDGE, MOVES.name]["write"], names) == work_queues
    # A partitioned actor's dead letters go back through its partitions exchange (rehashed).
    assert matching(TOPICS[EDGE, MOVES.name]["write"], exchanges) == {"inventory.partitions"}
    assert matching(TOPICS[EDGE, EVENTS.name]["write"], EVENT_TYPES) == set()
    assert matching(TOPICS[EDGE, EVENTS.name]["read"], EVENT_TYPES) == {*SAGA_EVENT_TYPES, *VIEW_EVENT_TYPES}


def _constructed_events(module: object) -> set[type[Event]]:
    """The Event classes a module calls (constructs), found in its source."""
    source = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    found = set()
    for node in ast.walk(source):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            value = vars(module).get(node.func.id)
            if isinstance(value, type) and issubclass(value, Event):
                found.add(value)
    return found


@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_an_actor_constructs_only_events_of_its_own_contracts_module(actor: str) -> None:
    """What makes ``events_of`` (events defined in brokers.contracts.<actor>) the actor's own."""
    import importlib
    import pkgutil

    package = importlib.import_module(f"actors.{actor}")
    modules = [
        importlib.import_module(f"actors.{actor}.{m.name}") for m in pkgutil.iter_modules(package.__path__)
    ]
    constructed = set().union(*(_constructed_events(module) for module in modules))
    # Equal, not merely included: an event type granted but never emitted would be a needless grant.
    assert {event.TYPE for event in constructed} == set(events_of(actor))


# --- the MongoDB users script ----------------------------------------------------------------------


def _mongodb_users() -> list[dict[str, str]]:
    match = re.search(r"^const users = (\[.*?\]);$", MONGODB_USERS.read_text(), re.MULTILINE | re.DOTALL)
    assert match, "create-users.js has no users array"
    return json.loads(match.group(1))


def test_the_mongodb_script_has_one_user_per_actor_on_its_own_database() -> None:
    users = _mongodb_users()
    assert [u["user"] for u in users] == list(ACTORS)
    for user in users:
        assert user["db"] == f"emporium_{user['user']}"
        assert user["passwordVariable"] == f"EMPORIUM_MONGODB_PASSWORD_{user['user'].upper()}"
    assert EDGE not in {u["user"] for u in users}


_FAKE_MONGOSH = """
const calls = [];
const admin = {
  getUser: (name) => (name === "catalog" ? { user: name } : null),
  createUser: (spec) => calls.push(["create", spec]),
  updateUser: (name, spec) => calls.push(["update", name, spec]),
};
globalThis.db = { getSiblingDB: (name) => { if (name !== "admin") throw new Error(name); return admin; } };
globalThis.print = () => {};
try {
  require("vm").runInThisContext(require("fs").readFileSync(process.argv[2], "utf8"));
  console.log(JSON.stringify({ calls }));
} catch (error) {
  console.log(JSON.stringify({ error: error.message, calls }));
}
"""


def _run_mongodb_script(tmp_path: Path, environment: dict[str, str]) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (it runs the mongosh script against a recording stand-in)")
    runner = tmp_path / "runner.js"
    runner.write_text(_FAKE_MONGOSH)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("EMPORIUM_MONGODB_PASSWORD_")
    } | environment
    done = subprocess.run(
        [node, str(runner), str(MONGODB_USERS)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout)


def _passwords() -> dict[str, str]:
    return {u["passwordVariable"]: f"pw-{u['user']}" for u in _mongodb_users()}


def test_the_mongodb_script_creates_or_updates_each_user_with_its_password_and_one_role(
    tmp_path: Path,
) -> None:
    outcome = _run_mongodb_script(tmp_path, _passwords())
    assert "error" not in outcome
    by_user = {call[1]["user"] if call[0] == "create" else call[1]: call for call in outcome["calls"]}
    assert set(by_user) == set(ACTORS)
    assert by_user["catalog"][0] == "update"  # it exists already (see the stand-in)
    for actor, call in by_user.items():
        spec = call[-1]
        assert spec["pwd"] == f"pw-{actor}"
        assert spec["roles"] == [{"role": "readWrite", "db": f"emporium_{actor}"}]


def test_the_mongodb_script_changes_nothing_while_a_password_is_missing(tmp_path: Path) -> None:
    passwords = _passwords()
    del passwords["EMPORIUM_MONGODB_PASSWORD_ORDERS"]
    outcome = _run_mongodb_script(tmp_path, passwords)
    assert "EMPORIUM_MONGODB_PASSWORD_ORDERS" in outcome["error"]
    assert outcome["calls"] == []


# --- the RabbitMQ passwords script -----------------------------------------------------------------


def _run_set_passwords(tmp_path: Path, secrets: dict[str, str], environment: dict[str, str]):
    """set-passwords.sh with a stand-in rabbitmqctl that records its arguments and standard input."""
    bin_dir, secrets_dir, log = tmp_path / "bin", tmp_path / "secrets", tmp_path / "calls"
    bin_dir.mkdir()
    secrets_dir.mkdir()
    fake = bin_dir / "rabbitmqctl"
    fake.write_text(f'#!/bin/sh\nprintf "%s %s=%s\\n" "$1" "$2" "$(cat)" >> {log}\n')
    fake.chmod(0o755)
    for user, password in secrets.items():
        (secrets_dir / f"rabbitmq-{user}").write_text(password + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_PASSWORD_")}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "RABBITMQ_SECRETS_DIR": str(secrets_dir), **environment}
    done = subprocess.run(["sh", str(SET_PASSWORDS)], capture_output=True, text=True, env=env)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_set_passwords_takes_files_then_the_environment_and_passes_them_on_standard_input(
    tmp_path: Path,
) -> None:
    users = [*ACTORS, EDGE]
    secrets = {user: f"file-{user}" for user in users if user != "orders"}
    done, calls = _run_set_passwords(tmp_path, secrets, {"RABBITMQ_PASSWORD_ORDERS": "env-orders"})
    assert done.returncode == 0, done.stderr
    assert sorted(calls) == sorted(
        f"change_password {user}={'env-orders' if user == 'orders' else f'file-{user}'}" for user in users
    )


def test_set_passwords_changes_nothing_while_a_password_is_missing(tmp_path: Path) -> None:
    secrets = {user: "x" for user in [*ACTORS, EDGE] if user not in ("edge", "payments")}
    done, calls = _run_set_passwords(tmp_path, secrets, {})
    assert done.returncode == 1
    assert "payments" in done.stderr and "edge" in done.stderr
    assert calls == []


# --- the command --------------------------------------------------------------------------------------


def test_write_check_passes_on_the_committed_assets_and_fails_on_a_stale_one(monkeypatch) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["production", "write", "--check"]).exit_code == 0
    before = DEFINITIONS.read_text()
    monkeypatch.setattr(production, "committed_assets", lambda: {DEFINITIONS: before + " "})
    stale = runner.invoke(app, ["production", "write", "--check"])
    assert stale.exit_code == 1
    assert "stale: ops/rabbitmq/definitions.json" in stale.output
    assert DEFINITIONS.read_text() == before  # --check changes nothing


def test_definitions_for_another_vhost_and_user_prefix() -> None:
    other = definitions(SETTINGS, vhost="staging", user_prefix="stg-")
    assert {u["name"] for u in other["users"]} == {f"stg-{name}" for name in (*ACTORS, EDGE)}
    everything = [*other["vhosts"], *other["permissions"], *other["topic_permissions"], *other["queues"]]
    assert {item.get("vhost", item.get("name")) for item in everything} == {"staging"}


# --- secrets from files ---------------------------------------------------------------------------------


def _production_secrets(folder: Path) -> None:
    folder.mkdir()
    (folder / "rabbitmq_url").write_text("amqp://catalog:from-a-file@rabbitmq:5672/emporium\n")
    (folder / "rabbitmq_management_url").write_text("http://ops:from-a-file@rabbitmq:15672")
    (folder / "mongodb_url").write_text("mongodb://catalog:from-a-file@mongo:27017/?authSource=admin")
    (folder / "emporium_metrics_token").write_text("m" * 40 + "\n")


def test_settings_read_secret_files_and_pass_the_production_checks(tmp_path: Path, monkeypatch) -> None:
    from pydantic import ValidationError

    from brokers.settings import Settings

    _production_secrets(tmp_path / "secrets")
    for variable in ("RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL", "MONGODB_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("EMPORIUM_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("EMPORIUM_ENV", "production")
    settings = Settings()
    assert settings.rabbitmq_url == "amqp://catalog:from-a-file@rabbitmq:5672/emporium"  # stripped
    assert settings.mongodb_url == "mongodb://catalog:from-a-file@mongo:27017/?authSource=admin"
    assert settings.emporium_metrics_token is not None
    assert settings.emporium_metrics_token.get_secret_value() == "m" * 40
    with pytest.raises(ValidationError):
        settings.rabbitmq_url = "amqp://guest:guest@elsewhere/"  # still frozen
    # The environment wins over a file, and the production checks see the winner.
    monkeypatch.setenv("RABBITMQ_URL", "amqp://guest:guest@rabbitmq:5672/")
    with pytest.raises(ValidationError, match="RABBITMQ_URL uses the guest account"):
        Settings()


def test_a_secrets_folder_that_is_not_there_is_refused(tmp_path: Path, monkeypatch) -> None:
    from pydantic_settings import SettingsError

    from brokers.settings import Settings

    monkeypatch.setenv("EMPORIUM_SECRETS_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(SettingsError, match="EMPORIUM_SECRETS_DIR=.* is not a directory"):
        Settings()
