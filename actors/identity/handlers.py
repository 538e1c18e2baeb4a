"""The identity actor: users, their credentials and roles, and the keys that sign access tokens.

Registering is a command and logging in a query that only reads (see brokers.contracts.identity).
A registration is applied once: the runtime's inbox skips a message seen before, and a copy sent
again under another message id finds its user already there (same id, address and role). One for
a taken address is recorded as refused, and asking for its user id answers why. A deactivation's
outcome, done or refused, is recorded under its id for ``GetDeactivation``.
"""

from datetime import UTC, datetime

from actors.identity import domain
from actors.identity.keys import SigningKey, issue_token, published
from actors.identity.passwords import hash_password, verify_password
from actors.identity.settings import identity_settings
from actors.identity.store import IdentityStore
from actors.runtime.actor import Actor, Work
from brokers.contracts.identity import (
    AccessToken,
    AuthenticateUser,
    CreateAdmin,
    DeactivateUser,
    Deactivation,
    GetDeactivation,
    GetSigningKeys,
    GetUser,
    Jwks,
    RegisterUser,
    RotateSigningKey,
    UserView,
)

identity = Actor("identity", IdentityStore)


@identity.handles(RegisterUser)
@identity.handles(CreateAdmin)
async def register(command: domain.Registration, work: Work[IdentityStore]) -> None:
    verdict = domain.judge_registration(
        command,
        same_id=await work.store.find(command.user_id),
        same_email=await work.store.find_by_email(command.email),
    )
    if isinstance(verdict, domain.RefusedRegistration):
        await work.store.record_refusal(verdict, at=datetime.now(UTC))
        return
    if verdict == "seen":
        return
    password_hash = await hash_password(command.password)
    user, registered = domain.register(command, password_hash=password_hash, now=datetime.now(UTC))
    # The unique email index settles a race between two registrations of one address: the loser
    # is retried and then refused by the rule above.
    await work.store.insert(user)
    work.emit(registered)


@identity.handles(DeactivateUser)
async def deactivate(command: DeactivateUser, work: Work[IdentityStore]) -> None:
    user, admins = await work.store.get(command.user_id), await work.store.admins()
    deactivation = domain.deactivate(command, user, admins=admins, now=datetime.now(UTC))
    await work.store.record_deactivation(deactivation)
    if deactivation.event is not None:
        work.emit(deactivation.event)


@identity.handles(RotateSigningKey)
async def rotate_signing_key(command: RotateSigningKey, work: Work[IdentityStore]) -> None:
    await work.store.activate_key(SigningKey.generate(), at=datetime.now(UTC))


@identity.answers_to(GetUser)
async def get_user(query: GetUser, store: IdentityStore) -> UserView:
    if query.user_id is not None:
        return (await store.get(query.user_id)).view()
    assert query.email is not None  # GetUser names exactly one of the two
    return (await store.get_by_email(query.email)).view()


@identity.answers_to(GetDeactivation)
async def get_deactivation(query: GetDeactivation, store: IdentityStore) -> Deactivation:
    return await store.deactivation(query.deactivation_id)


@identity.answers_to(AuthenticateUser)
async def authenticate(query: AuthenticateUser, store: IdentityStore) -> AccessToken:
    user = await store.find_by_email(query.email)
    matches = await verify_password(query.password, user.password_hash if user else None)
    user = domain.authenticated(user, password_matches=matches)
    ttl_s = identity_settings().emporium_identity_token_ttl_s
    return issue_token(user.user_id, user.role, await store.signing_key(), now=datetime.now(UTC), ttl_s=ttl_s)


@identity.answers_to(GetSigningKeys)
async def signing_keys(query: GetSigningKeys, store: IdentityStore) -> Jwks:
    ttl_s = identity_settings().emporium_identity_token_ttl_s
    keys = published(await store.keys(), now=datetime.now(UTC), token_ttl_s=ttl_s)
    return Jwks(keys=[key.jwk() for key in keys])
