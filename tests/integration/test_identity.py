"""Identity on the real servers: registering once whatever the copies, one address one account,
logging in for a token that verifies against the published keys, refusals that all look alike,
deactivation, key rotation without logging anyone out, administrators only through the operators'
tool, and production refusing to start without a configured key."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
import pytest
from cryptography.fernet import Fernet

from actors.identity import identity
from actors.identity.keys import KeySealBroken, SigningKey, SigningKeyMissing
from actors.identity.settings import identity_settings
from actors.identity.store import IdentityStore
from actors.runtime.host import ActorHost
from actors.runtime.outbox import applied_messages, outbox_entries
from brokers.contracts.identity import (
    AccessToken,
    AuthenticateUser,
    DeactivateUser,
    GetSigningKeys,
    GetUser,
    Jwks,
    RegisterUser,
    UserView,
)
from brokers.factory import publish
from brokers.rpc import Problem, QueryFailed, Requester
from ops.identity_admin import IdentityAdminFailed, create_admin, rotate_signing_key
from tests.helpers import Tap, eventually, send
from tests.integration.support import (
    amqp,
    dead_letter_headers,
    header,
    outcome_count,
    requester,
    running,
)
from tests.unit.test_identity_keys import verify

PASSWORD = "Correct-horse-42"


def registration(
    user_id: str = "u-1", email: str = "ada@example.com", password: str = PASSWORD
) -> RegisterUser:
    return RegisterUser(user_id=user_id, email=email, name="Ada Lovelace", password=password)


async def registered(asker: Requester, user_id: str) -> UserView:
    return await eventually(lambda: asker.ask(GetUser(user_id=user_id), UserView), what=f"user {user_id}")


async def login(asker: Requester, email: str, password: str = PASSWORD) -> AccessToken:
    return await asker.ask(AuthenticateUser(email=email, password=password), AccessToken)


async def refusal(asker: Requester, email: str, password: str) -> Problem:
    with pytest.raises(QueryFailed) as refused:
        await login(asker, email, password)
    return refused.value.problem


async def test_a_registration_is_applied_and_announced_once_whatever_the_copies(
    start_host, broker, mongo, settings
):
    await start_host("identity")
    db = mongo[settings.database_name("identity")]
    duplicates_before = await outcome_count("identity", "duplicate")
    command = registration(email="  Ada@Example.COM ")
    async with (
        Tap(settings.rabbitmq_url, routing_keys=["user.registered"]) as tap,
        requester(settings) as asker,
    ):
        envelope = await send(broker, command)
        await publish(broker, command, envelope)  # a redelivery: the same message again
        await send(broker, command)  # the same registration under another message id
        await eventually(
            lambda: applied_messages(db), until=lambda applied: len(applied) == 2, what="both ids applied"
        )
        await eventually(
            lambda: outcome_count("identity", "duplicate"),
            until=lambda n: n == duplicates_before + 1,
            what="the redelivery skipped",
        )
        user = await registered(asker, "u-1")
        (announced,) = await tap.wait_for("user.registered")

    assert (user.email, user.name, user.role, user.active) == (
        "ada@example.com",
        "Ada Lovelace",
        "customer",
        True,
    )
    assert len(await outbox_entries(db)) == 1  # announced once
    assert json.loads(announced.body) == {
        "user_id": "u-1",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    }
    assert len(tap.of_type("user.registered")) == 1
    stored = await db["users"].find_one({"_id": "u-1"})
    assert stored["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in str(stored)


async def test_a_second_account_for_an_address_is_refused_and_its_password_parked_nowhere(
    start_host, broker, settings
):
    await start_host("identity")
    async with requester(settings) as asker, amqp(settings) as queues:
        await send(broker, registration("u-1"))
        await registered(asker, "u-1")
        await send(broker, registration("u-2", email="ADA@example.com ", password="Another-pass-99"))
        refused = await eventually(
            lambda: _problem_of(asker.ask(GetUser(user_id="u-2"), UserView)),
            until=lambda problem: problem is not None and problem.status == 409,
            what="the second registration to be refused",
        )
        owner = await asker.ask(GetUser(email="ada@example.com"), UserView)
        parked = await queues.depth("identity.dlq")

    assert refused.detail == "the email address is already registered"
    assert owner.user_id == "u-1"
    assert parked == 0


async def _problem_of(asking: Awaitable[UserView]) -> Problem | None:
    try:
        await asking
    except QueryFailed as exc:
        return exc.problem
    return None


async def test_a_dead_lettered_registration_is_parked_without_its_password(start_host, broker, settings):
    """A registration that breaks a rule (a reused user id) is dead-lettered with its password masked."""
    await start_host("identity")
    async with requester(settings) as asker, amqp(settings) as queues:
        await send(broker, registration("u-1"))
        await registered(asker, "u-1")
        await send(broker, registration("u-1", email="grace@example.com", password="Another-pass-99"))
        (dead,) = await queues.take("identity.dlq", 1)

    assert dead_letter_headers(dead)["x-reason"] == "rule-violation"
    assert header(dead, "x-redacted") == "password"
    assert json.loads(dead.body)["password"] == "[redacted]"
    assert b"Another-pass-99" not in dead.body


async def test_a_login_answers_a_token_that_verifies_against_the_published_keys(start_host, broker, settings):
    await start_host("identity")
    async with requester(settings) as asker:
        await send(broker, registration())
        await registered(asker, "u-1")
        token = await login(asker, " ADA@example.com")
        jwks = await asker.ask(GetSigningKeys(), Jwks)

    claims = verify(token.access_token, jwks)  # signature, iss, aud and exp checked
    assert (claims["sub"], claims["role"]) == ("u-1", "customer")
    ttl_s = identity_settings().emporium_identity_token_ttl_s
    assert claims["exp"] - claims["iat"] == token.expires_in == ttl_s
    assert jwt.get_unverified_header(token.access_token)["kid"] == jwks.keys[0].kid
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            token.access_token,
            jwt.PyJWKSet.from_dict(jwks.model_dump())[jwks.keys[0].kid].key,
            algorithms=["EdDSA"],
            audience="another-service",
        )


async def test_wrong_password_unknown_address_and_deactivated_account_get_one_answer(
    start_host, broker, settings
):
    await start_host("identity")
    applied_before = await outcome_count("identity", "applied")
    async with (
        requester(settings) as asker,
        Tap(settings.rabbitmq_url, routing_keys=["user.deactivated"]) as tap,
    ):
        await send(broker, registration())
        await registered(asker, "u-1")
        wrong_password = await refusal(asker, "ada@example.com", PASSWORD + "x")
        unknown_address = await refusal(asker, "nobody@example.com", PASSWORD)
        await login(asker, "ada@example.com")  # the right password works while the account is active

        await send(broker, DeactivateUser(deactivation_id="d-1", user_id="u-1", requested_by="root"))
        # Deactivating again changes nothing.
        await send(broker, DeactivateUser(deactivation_id="d-2", user_id="u-1", requested_by="root"))
        await eventually(
            lambda: asker.ask(GetUser(user_id="u-1"), UserView),
            until=lambda user: not user.active,
            what="u-1 deactivated",
        )
        deactivated = await refusal(asker, "ada@example.com", PASSWORD)
        await tap.wait_for("user.deactivated")
        await eventually(
            lambda: outcome_count("identity", "applied"),
            until=lambda n: n == applied_before + 3,
            what="the registration and both deactivations applied",
        )

    assert wrong_password == unknown_address == deactivated
    assert (wrong_password.status, wrong_password.detail) == (404, "email or password is wrong")
    assert len(tap.of_type("user.deactivated")) == 1


async def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    start_host, broker, settings
):
    await start_host("identity")
    async with requester(settings) as asker:
        await send(broker, registration())
        await registered(asker, "u-1")
        old_token = (await login(asker, "ada@example.com")).access_token
        old_kid = (await asker.ask(GetSigningKeys(), Jwks)).keys[0].kid

        new_kid = await rotate_signing_key(settings)
        new_token = (await login(asker, "ada@example.com")).access_token
        jwks = await asker.ask(GetSigningKeys(), Jwks)

    assert new_kid != old_kid
    assert [key.kid for key in jwks.keys] == [new_kid, old_kid]
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert verify(old_token, jwks)["sub"] == verify(new_token, jwks)["sub"] == "u-1"


async def test_administrators_come_from_the_operators_tool_only(start_host, settings):
    await start_host("identity")
    admin = await create_admin(settings, " Root@Example.com", "Operator-pass-7", name="Root")
    async with requester(settings) as asker:
        token = await login(asker, "root@example.com", "Operator-pass-7")
        jwks = await asker.ask(GetSigningKeys(), Jwks)
    with pytest.raises(IdentityAdminFailed, match="already registered"):
        await create_admin(settings, "root@example.com", "Operator-pass-8")
    with pytest.raises(IdentityAdminFailed, match="at least 12 characters"):
        await create_admin(settings, "other@example.com", "Short-1")

    assert (admin.email, admin.name, admin.role, admin.active) == ("root@example.com", "Root", "admin", True)
    assert verify(token.access_token, jwks)["role"] == "admin"


@pytest.fixture
def identity_env(monkeypatch) -> Callable[..., None]:
    """Set identity's environment for this test; its settings are read again afterwards."""

    def set_env(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name.upper(), value)
        identity_settings.cache_clear()

    yield set_env
    identity_settings.cache_clear()


async def test_production_refuses_to_start_without_a_configured_key(identity_env, mongo, settings):
    identity_env(emporium_env="production")
    host = ActorHost([identity], settings)
    with pytest.raises(SigningKeyMissing, match="refusing to start in production"):
        async with running(host):
            pass
    assert await mongo[settings.database_name("identity")]["signing_keys"].count_documents({}) == 0


async def test_a_configured_key_is_imported_once_and_signs_from_then_on(
    identity_env, mongo, settings, tmp_path: Path
):
    db = mongo[settings.database_name("identity")]
    first, second = SigningKey.generate(), SigningKey.generate()
    (tmp_path / "first.pem").write_text(first.private_pem)
    (tmp_path / "second.pem").write_text(second.private_pem)

    identity_env(
        emporium_env="production",
        emporium_identity_signing_key_file=str(tmp_path / "first.pem"),
        emporium_identity_key_encryption_keys=Fernet.generate_key().decode(),
    )
    await IdentityStore.prepare(db)
    await IdentityStore.prepare(db)  # a restart, or a second replica: nothing new
    assert (await IdentityStore(db).signing_key()).kid == first.kid
    identity_env(emporium_identity_signing_key_file=str(tmp_path / "second.pem"))
    await IdentityStore.prepare(db)

    keys = sorted(await IdentityStore(db).keys(), key=lambda key: key.generation)
    assert [(key.kid, key.generation) for key in keys] == [(first.kid, 1), (second.kid, 2)]
    assert (await IdentityStore(db).signing_key()).kid == second.kid


# --- the signing keys at rest -------------------------------------------------------------------


async def test_the_stored_signing_keys_show_nothing_of_their_private_half_and_still_sign(
    identity_env, mongo, settings
):
    identity_env(emporium_identity_key_encryption_keys=Fernet.generate_key().decode())
    db = mongo[settings.database_name("identity")]
    await IdentityStore.prepare(db)

    stored = await db["signing_keys"].find_one({})
    key = await IdentityStore(db).signing_key()
    assert "private_pem" not in stored and "sealed_pem" in stored
    assert "PRIVATE KEY" not in json.dumps(stored, default=str)
    assert "".join(key.private_pem.splitlines()[1:-1]) not in json.dumps(stored, default=str)
    token = key.sign({"sub": "u-1"})
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "u-1"


async def test_keys_kept_in_clear_or_under_a_replaced_encryption_key_are_sealed_again_at_start(
    identity_env, mongo, settings
):
    db = mongo[settings.database_name("identity")]
    await IdentityStore.prepare(db)  # development, no encryption key: in clear
    in_clear = await IdentityStore(db).signing_key()
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()

    identity_env(emporium_identity_key_encryption_keys=first)
    await IdentityStore.prepare(db)
    under_first = await db["signing_keys"].find_one({})
    identity_env(emporium_identity_key_encryption_keys=f"{second},{first}")  # rotation: the new one first
    await IdentityStore.prepare(db)
    under_second = await db["signing_keys"].find_one({})

    assert "private_pem" not in under_first
    assert Fernet(first).decrypt(under_first["sealed_pem"].encode()).decode() == in_clear.private_pem
    assert Fernet(second).decrypt(under_second["sealed_pem"].encode()).decode() == in_clear.private_pem
    identity_env(emporium_identity_key_encryption_keys=second)  # the replaced key is no longer needed
    assert (await IdentityStore(db).signing_key()) == in_clear


@pytest.mark.parametrize("configured", ["none", "another"])
async def test_identity_refuses_to_start_when_nothing_configured_opens_its_keys(
    identity_env, mongo, settings, configured
):
    db = mongo[settings.database_name("identity")]
    identity_env(emporium_identity_key_encryption_keys=Fernet.generate_key().decode())
    await IdentityStore.prepare(db)
    identity_env(
        emporium_identity_key_encryption_keys="" if configured == "none" else Fernet.generate_key().decode()
    )
    host = ActorHost([identity], settings)
    with pytest.raises(KeySealBroken, match="EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS"):
        async with running(host):
            pass
    assert await db["signing_keys"].count_documents({}) == 1  # nothing written over it


async def test_production_refuses_to_start_without_keys_to_encrypt_its_signing_key(
    identity_env, mongo, settings, tmp_path: Path
):
    (tmp_path / "key.pem").write_text(SigningKey.generate().private_pem)
    identity_env(emporium_env="production", emporium_identity_signing_key_file=str(tmp_path / "key.pem"))
    host = ActorHost([identity], settings)
    with pytest.raises(KeySealBroken, match="refusing to start in production"):
        async with running(host):
            pass
    assert await mongo[settings.database_name("identity")]["signing_keys"].count_documents({}) == 0
