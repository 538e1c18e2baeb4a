"""Identity's contracts: one spelling per email address, the password policy, no password in sight."""

import json

import pytest
from pydantic import ValidationError

from brokers.contracts.identity import (
    AuthenticateUser,
    CreateAdmin,
    GetSigningKeys,
    GetUser,
    RegisterUser,
    normalise_email,
    password_problems,
)
from brokers.envelope import InvalidMessage, without_secrets

GOOD = "Correct-horse-42"


def registration(**changes) -> RegisterUser:
    return RegisterUser(
        **{"user_id": "u-1", "email": "ada@example.com", "name": "Ada", "password": GOOD, **changes}
    )


@pytest.mark.parametrize(
    "typed", ["ada@example.com", "  Ada@Example.COM ", "ADA@EXAMPLE.COM", "\tada@example.com\n"]
)
def test_an_address_has_one_spelling_however_it_is_typed(typed):
    assert registration(email=typed).email == "ada@example.com"
    assert AuthenticateUser(email=typed, password="x").email == "ada@example.com"
    assert GetUser(email=typed).email == "ada@example.com"


def test_normalising_is_stripping_and_lower_casing():
    assert normalise_email(" Grace.Hopper@Navy.MIL ") == "grace.hopper@navy.mil"


@pytest.mark.parametrize("address", ["not-an-address", "a@", "@example.com", "a b@example.com", {"$gt": ""}])
def test_what_is_not_an_address_is_refused(address):
    with pytest.raises(ValidationError):
        registration(email=address)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Short-1", "at least 12 characters"),
        ("abcdefghijklmnop", "at least two of"),
        ("ABCDEFGHIJKLMNOP", "at least two of"),
        ("1234567890123456", "at least two of"),
        ("!!!!!!!!!!!!!!!!", "at least two of"),
        ("Ada@Example.com", "not be the email"),
        ("ADA.LOVELACE.1815", None),
    ],
)
def test_the_password_policy(password, reason):
    problems = password_problems(password, "ada@example.com")
    if reason is None:
        assert problems == []
    else:
        assert any(reason in problem for problem in problems), problems


def test_the_local_part_alone_is_not_a_password_either():
    assert password_problems("Ada.Lovelace1", "ada.lovelace1@example.com") == [
        "the password must not be the email address"
    ]


def test_a_registration_breaking_the_policy_cannot_be_built_or_parsed():
    with pytest.raises(ValidationError, match="at least 12 characters"):
        registration(password="Short-1")
    with pytest.raises(ValidationError, match="not be the email"):
        CreateAdmin(
            user_id="a-1", email="root.admin@example.com", name="Root", password="ROOT.ADMIN@example.com"
        )
    body = registration().body().replace(GOOD.encode(), b"aaaaaaaaaaaaaaaa")
    with pytest.raises(InvalidMessage, match="at least two of"):
        RegisterUser.parse(body)


def test_passwords_are_kept_as_typed_but_never_shown():
    command = registration(password="  " + GOOD + " ")
    assert command.password == "  " + GOOD + " "
    assert RegisterUser.parse(command.body()) == command  # they do travel in the body
    assert GOOD not in repr(command) and GOOD not in str(command)
    login = AuthenticateUser(email="ada@example.com", password=GOOD)
    assert GOOD not in repr(login)
    with pytest.raises(ValidationError) as refused:
        registration(password="tooshort")
    assert "tooshort" not in str(refused.value)


def test_an_overlong_password_is_refused_before_anything_hashes_it():
    with pytest.raises(ValidationError):
        AuthenticateUser(email="ada@example.com", password="Aa1-" * 100)


@pytest.mark.parametrize("keys", [{}, {"user_id": "u-1", "email": "ada@example.com"}])
def test_a_user_is_asked_for_by_exactly_one_key(keys):
    with pytest.raises(ValidationError, match="exactly one of user_id and email"):
        GetUser(**keys)


def test_a_registration_has_no_role_to_set():
    with pytest.raises(ValidationError, match="role"):
        registration(role="admin")


def test_a_registration_body_is_parked_without_its_password():
    body = RegisterUser(
        user_id="u-1", email="ada@example.com", name="Ada", password="Correct-horse-42"
    ).body()
    masked = json.loads(without_secrets(RegisterUser.TYPE, body))
    assert masked == {"user_id": "u-1", "email": "ada@example.com", "name": "Ada", "password": "[redacted]"}


@pytest.mark.parametrize("body", [b"not json", b'["Correct-horse-42"]'])
def test_an_unreadable_body_of_a_type_with_secrets_is_dropped_whole(body):
    assert without_secrets(RegisterUser.TYPE, body) == b""


def test_a_type_without_secrets_keeps_its_body():
    assert without_secrets(GetSigningKeys.TYPE, b"{}") is None
    assert without_secrets("no.such.type", b"{}") is None
