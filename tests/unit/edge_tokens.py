"""Access tokens for unit tests of the edge: a signing key of the test's own, served as identity's.

The edge is the real one, never connected to RabbitMQ (its lifespan is not run); only its key set
is given the test key, and its subjects the mint's users, so tokens are verified without an
identity actor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from fastapi import FastAPI

from actors.identity.keys import SigningKey
from brokers.contracts.identity import Jwks, Role, UserView
from brokers.settings import Settings
from edge.app import create_app
from edge.auth import KeySet
from edge.subjects import Subjects


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _joined(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return ".".join(b64url(json.dumps(part).encode()) for part in (header, claims))


class Mint:
    """Makes tokens the way identity does, and bad ones the way attackers would."""

    def __init__(self, key: SigningKey | None = None, subject: str = "ann") -> None:
        self.key = key or SigningKey.generate()
        self.subject = subject
        self.fetches = 0
        # The role of every user a token was made for by ``token``; others are customers.
        self.roles: dict[str, Role] = {}

    async def user(self, user_id: str) -> UserView:
        """Identity's view of a user: every user a token names exists and is active."""
        return UserView(
            user_id=user_id,
            email=f"{user_id}@example.com",
            name=user_id,
            role=self.roles.get(user_id, "customer"),
            active=True,
            registered_at=datetime.now(UTC),
        )

    async def jwks(self) -> Jwks:
        self.fetches += 1
        return Jwks(keys=[self.key.jwk()])

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Identity's claims for the mint's customer; a change to None leaves that claim out."""
        now = int(datetime.now(UTC).timestamp())
        base = {
            "iss": "emporium-identity",
            "aud": "emporium",
            "sub": self.subject,
            "role": "customer",
            "iat": now,
            "exp": now + 900,
        }
        return {k: v for k, v in {**base, **changes}.items() if v is not None}

    def signed(self, claims: dict[str, Any], *, key: SigningKey | None = None, **header: Any) -> str:
        """Signed with ``key`` (the mint's by default); a header parameter set to None is left out."""
        key = key or self.key
        private = load_pem_private_key(key.private_pem.encode(), password=None)
        headers = {k: v for k, v in {"kid": key.kid, **header}.items() if v is not None}
        return jwt.encode(claims, private, algorithm="EdDSA", headers=headers)  # type: ignore[arg-type]

    def with_header(self, claims: dict[str, Any], header: dict[str, Any]) -> str:
        """Signed by the mint's key under exactly ``header`` (PyJWT would refuse to write some)."""
        private = load_pem_private_key(self.key.private_pem.encode(), password=None)
        signing_input = _joined({"alg": "EdDSA", "typ": "JWT", **header}, claims)
        return f"{signing_input}.{b64url(private.sign(signing_input.encode()))}"  # type: ignore[call-arg]

    def token(self, user_id: str | None = None, role: Role = "customer") -> str:
        user_id = user_id or self.subject
        self.roles[user_id] = role
        return self.signed(self.claims(sub=user_id, role=role))

    def headers(self, user_id: str | None = None, role: Role = "customer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, role)}"}

    def unsigned(self, claims: dict[str, Any]) -> str:
        """``alg: none``: no signature at all."""
        return _joined({"alg": "none", "typ": "JWT", "kid": self.key.kid}, claims) + "."

    def hmac_with_public_key(self, claims: dict[str, Any]) -> str:
        """The algorithm-confusion attack: HS256 keyed with the public verification key (PEM)."""
        private = load_pem_private_key(self.key.private_pem.encode(), password=None)
        public_pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        signing_input = _joined({"alg": "HS256", "typ": "JWT", "kid": self.key.kid}, claims)
        signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"


def offline_edge(mint: Mint, **settings: Any) -> FastAPI:
    app = create_app(Settings(**settings))
    app.state.keys = KeySet(mint.jwks)
    app.state.subjects = Subjects(mint.user, subscribed=lambda: True)
    return app


def forged_tokens(mint: Mint) -> dict[str, Callable[[], str]]:
    """Every way of forging a token, or making one unfit, that the edge must answer 401, by name."""
    return {
        "tampered signature": lambda: _flip_signature(mint.token()),
        "tampered claims": lambda: _swap_claims(mint, mint.token(), mint.claims(role="admin")),
        "another key, same kid": lambda: mint.signed(
            mint.claims(), key=SigningKey.generate(), kid=mint.key.kid
        ),
        "unknown kid": lambda: mint.signed(mint.claims(), key=SigningKey.generate()),
        "no kid": lambda: mint.signed(mint.claims(), kid=None),
        "expired": lambda: mint.signed(mint.claims(iat=1_000, exp=2_000)),
        "wrong audience": lambda: mint.signed(mint.claims(aud="another-service")),
        "wrong issuer": lambda: mint.signed(mint.claims(iss="someone-else")),
        "no expiry": lambda: mint.signed(mint.claims(exp=None)),
        "no subject": lambda: mint.signed(mint.claims(sub=None)),
        "bad subject": lambda: mint.signed(mint.claims(sub={"$gt": ""})),
        "unknown role": lambda: mint.signed(mint.claims(role="superuser")),
        "alg none": lambda: mint.unsigned(mint.claims()),
        "HS256 with the public key": lambda: mint.hmac_with_public_key(mint.claims(role="admin")),
        "not a JWT": lambda: "not-a-token",
        "role a list": lambda: mint.signed(mint.claims(role=["admin"])),
        "role an object": lambda: mint.signed(mint.claims(role={"admin": True})),
        "lives until 2100": lambda: mint.signed(mint.claims(exp=4_102_444_800)),
        "expiry a string": lambda: mint.signed(mint.claims(exp="4102444800")),
        "issued in the future": lambda: mint.signed(mint.claims(iat=4_102_444_000, exp=4_102_444_800)),
        **{
            f"kid {name}": lambda value=value: mint.with_header(mint.claims(), {"kid": value})
            for name, value in {
                "null": None,
                "a number": 5,
                "a float": 1.5,
                "true": True,
                "a list": [mint.key.kid],
                "an object": {"kid": mint.key.kid},
                "empty": "",
                "of 8,000 characters": "k" * 8_000,
            }.items()
        },
        **{
            f"crit {name}": lambda value=value: mint.with_header(
                mint.claims(), {"kid": mint.key.kid, "crit": value}
            )
            for name, value in {
                "naming an extension": ["exp"],
                "empty": [],
                "a string": "b64",
                "null": None,
            }.items()
        },
        "alg a list": lambda: mint.with_header(mint.claims(), {"kid": mint.key.kid, "alg": ["EdDSA"]}),
        "header an array": lambda: ".".join(["WzFd", mint.token().split(".", 1)[1]]),
        **{
            f"{name} naming another key": lambda name=name: _with_key_elsewhere(mint, name)
            for name in ("jku", "x5u", "jwk")
        },
    }


def _with_key_elsewhere(mint: Mint, parameter: str) -> str:
    """Signed by an attacker's key that the header points to (jku/x5u) or carries (jwk); the mint's kid."""
    attacker = SigningKey.generate()
    where = attacker.jwk().model_dump() if parameter == "jwk" else "https://attacker.example/keys"
    return mint.signed(mint.claims(role="admin"), key=attacker, kid=mint.key.kid, **{parameter: where})


def _flip_signature(token: str) -> str:
    signing_input, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{signing_input}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _swap_claims(mint: Mint, token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    return ".".join([header, mint.unsigned(claims).split(".")[1], signature])
