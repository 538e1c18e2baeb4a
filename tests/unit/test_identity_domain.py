"""Identity's rules: registering once, the role from the command, logging in, deactivating; and the
password hashing they rely on."""

from datetime import UTC, datetime

import pytest

from actors.identity import domain
from actors.identity.passwords import hash_password, verify_password
from actors.runtime.errors import NotFound, RuleViolation
from brokers.contracts.identity import (
    CreateAdmin,
    DeactivateUser,
    RegisterUser,
    UserDeactivated,
    UserRegistered,
)

NOW = datetime(2024, 5, 4, 12, 0, tzinfo=UTC)
PASSWORD = "Correct-horse-42"


def command(kind=RegisterUser, **changes):
    return kind(
        **{"user_id": "u-1", "email": "ada@example.com", "name": "Ada", "password": PASSWORD, **changes}
    )


def user(**changes) -> domain.User:
    registered, _ = domain.register(command(), password_hash="$argon2id$stand-in", now=NOW)
    return domain.User(**{**registered.__dict__, **changes})


def test_registering_makes_an_active_customer_and_announces_it():
    registered, event = domain.register(command(), password_hash="$argon2id$h", now=NOW)
    assert (registered.role, registered.active, registered.registered_at) == ("customer", True, NOW)
    assert event == UserRegistered(user_id="u-1", email="ada@example.com", name="Ada")


def test_the_admin_role_comes_only_from_the_admin_command():
    admin, _ = domain.register(command(CreateAdmin), password_hash="$argon2id$h", now=NOW)
    assert admin.role == "admin"


def test_the_view_of_a_user_has_no_password_hash():
    view = user().view()
    assert "password" not in str(view.model_dump()) and "argon2" not in view.model_dump_json()
    assert "argon2" not in repr(user())


def test_a_new_address_and_id_is_a_new_registration():
    assert domain.judge_registration(command(), same_id=None, same_email=None) == "register"


def test_a_copy_of_an_applied_registration_changes_nothing():
    assert domain.judge_registration(command(), same_id=user(), same_email=user()) == "seen"


def test_a_taken_address_is_refused_without_naming_it_or_its_owner():
    verdict = domain.judge_registration(command(), same_id=None, same_email=user(user_id="u-0"))
    assert verdict == domain.RefusedRegistration("u-1", "the email address is already registered")
    assert "ada@example.com" not in verdict.reason and "u-0" not in verdict.reason


@pytest.mark.parametrize(
    "existing", [user(email="grace@example.com"), user(role="admin")], ids=["other address", "other role"]
)
def test_a_taken_user_id_breaks_the_rule(existing):
    with pytest.raises(RuleViolation, match="user id u-1 already belongs"):
        domain.judge_registration(command(), same_id=existing, same_email=None)


@pytest.mark.parametrize(
    ("who", "matches"),
    [(None, False), (user(), False), (user(active=False), True)],
    ids=["unknown address", "wrong password", "deactivated"],
)
def test_every_failed_login_gets_the_same_answer(who, matches):
    with pytest.raises(NotFound) as refused:
        domain.authenticated(who, password_matches=matches)
    assert str(refused.value) == domain.BAD_CREDENTIALS == "email or password is wrong"


def test_an_active_user_with_the_right_password_logs_in():
    assert domain.authenticated(user(), password_matches=True) == user()


def deactivation(user_id: str = "u-1", by: str = "root") -> DeactivateUser:
    return DeactivateUser(deactivation_id="d-1", user_id=user_id, requested_by=by)


TWO_ADMINS = domain.Admins(active=2, version=4)


def test_deactivating_once_announces_it_and_again_changes_nothing():
    done = domain.deactivate(deactivation(), user(), admins=TWO_ADMINS, now=NOW)
    assert (done.user.active, done.user.deactivated_at, done.deactivated_at) == (False, NOW, NOW)
    assert done.event == UserDeactivated(user_id="u-1") and done.refusal is None
    assert done.guard_version is None  # a customer leaving changes nothing about the administrators

    again = domain.deactivate(deactivation(), done.user, admins=TWO_ADMINS, now=NOW)
    assert (again.user, again.event, again.refusal, again.deactivated_at) == (None, None, None, NOW)


def test_an_administrator_cannot_deactivate_themselves():
    root = user(user_id="root", role="admin")
    refused = domain.deactivate(deactivation("root", by="root"), root, admins=TWO_ADMINS, now=NOW)
    assert (refused.refusal, refused.user, refused.event) == (domain.SELF_DEACTIVATION, None, None)


def test_the_last_active_administrator_cannot_be_deactivated_and_another_one_writes_the_guard():
    other = user(user_id="other", role="admin")
    refused = domain.deactivate(deactivation("other"), other, admins=domain.Admins(1, 4), now=NOW)
    assert (refused.refusal, refused.user, refused.guard_version) == (domain.LAST_ADMIN, None, None)

    done = domain.deactivate(deactivation("other"), other, admins=TWO_ADMINS, now=NOW)
    assert done.refusal is None and done.user.active is False and done.guard_version == 5


async def test_a_password_verifies_against_its_argon2id_hash_only():
    hashed = await hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert await verify_password(PASSWORD, hashed)
    assert not await verify_password(PASSWORD + "!", hashed)
    assert not await verify_password(PASSWORD, None)  # no such user: a stand-in hash, never a match
    # The same text composed differently (NFKC): "ﬁ" is the ligature of "fi".
    ligature = await hash_password("ﬁne-Password-1")
    assert await verify_password("fine-Password-1", ligature)
