"""Operator actions on identity: creating an administrator, rotating the signing key.

This is the only way to an administrator account: the edge only ever sends ``RegisterUser``
(customers), never ``CreateAdmin``, and there is no default administrator or password. Both actions
talk to a running identity actor through RabbitMQ, like everything else, and wait until its
answers show the change.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from aio_pika.exceptions import AMQPError
from pydantic import ValidationError
from rich.console import Console

from brokers.contracts.identity import CreateAdmin, GetSigningKeys, Jwks, RotateSigningKey, UserView
from brokers.envelope import Command, Envelope, new_id
from brokers.factory import make_broker, publish
from brokers.registration import RegistrationRefused, poll, register
from brokers.rpc import requesting
from brokers.settings import Settings, get_settings

# Its connections' name in the RabbitMQ UI.
APP_NAME = "emporium-ops"


class IdentityAdminFailed(RuntimeError):
    """The action was refused, or identity did not show its effect in time."""


async def create_admin(
    settings: Settings, email: str, password: str, *, name: str = "Administrator", timeout_s: float = 20.0
) -> UserView:
    """Register an administrator and return it once identity answers for it."""
    try:
        command = CreateAdmin(user_id=f"admin-{new_id()}", email=email, name=name, password=password)
    except ValidationError as exc:
        reasons = "; ".join(error["msg"] for error in exc.errors())
        raise IdentityAdminFailed(f"cannot create this administrator: {reasons}") from exc
    async with requesting(settings, app_name=APP_NAME) as asker:
        try:
            admin = await register(
                command,
                send=lambda c: _send(settings, c),
                ask=lambda q: asker.ask(q, UserView),
                timeout_s=timeout_s,
            )
        except RegistrationRefused as exc:
            raise IdentityAdminFailed(f"cannot create this administrator: {exc}") from exc
    if admin is None:
        raise IdentityAdminFailed(_not_seen("the administrator", timeout_s))
    return admin


async def rotate_signing_key(settings: Settings, *, timeout_s: float = 20.0) -> str:
    """Start signing with a new key; returns its key id. Tokens signed before stay valid."""
    async with requesting(settings, app_name=APP_NAME) as asker:
        before = (await asker.ask(GetSigningKeys(), Jwks)).keys[0].kid
        await _send(settings, RotateSigningKey())
        after = await poll(
            lambda: asker.ask(GetSigningKeys(), Jwks),
            until=lambda jwks: jwks.keys[0].kid != before,
            timeout_s=timeout_s,
        )
    if after is None:
        raise IdentityAdminFailed(_not_seen("the new signing key", timeout_s))
    return after.keys[0].kid


def _not_seen(what: str, timeout_s: float) -> str:
    return (
        f"identity did not show {what} within {timeout_s:g}s: is the identity actor running? "
        "A command it could not apply is in the dead-letter queue identity.dlq"
    )


async def _send(settings: Settings, command: Command) -> None:
    broker = make_broker(settings, app_name=APP_NAME, role="commands")
    await broker.connect()
    try:
        await publish(broker, command, Envelope.first(command))
    finally:
        await broker.stop()


app = typer.Typer(
    help="Administrators and signing keys (talks to a running identity actor).", no_args_is_help=True
)
console = Console()


def _run(action) -> None:
    try:
        asyncio.run(action)
    except (IdentityAdminFailed, AMQPError, OSError) as exc:  # refused, or RabbitMQ not reachable
        console.print(f"[red]error:[/red] {exc or type(exc).__name__}")
        raise typer.Exit(1) from exc


@app.command("create")
def create_command(
    email: Annotated[str, typer.Option(help="The administrator's email address (the login).")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="EMPORIUM_ADMIN_PASSWORD",
            help="Asked for when not given (or set in EMPORIUM_ADMIN_PASSWORD); never a default.",
        ),
    ],
    name: Annotated[str, typer.Option(help="Shown name.")] = "Administrator",
) -> None:
    """Create an administrator: the only way to one."""

    async def create() -> None:
        admin = await create_admin(get_settings(), email, password, name=name)
        console.print(f"administrator {admin.email} created (user id {admin.user_id})")

    _run(create())


@app.command("rotate-key")
def rotate_key_command() -> None:
    """Sign new tokens with a new key; tokens signed with the old one stay valid until they expire."""

    async def rotate() -> None:
        console.print(f"signing with key {await rotate_signing_key(get_settings())}")

    _run(rotate())
