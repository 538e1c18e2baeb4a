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

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.fetches = 0
        # The role of every user a token was made for by ``token``; others are customers.
        self.roles: dict[str, Role] = {}

    async def user(self, user_id: str) -> UserView:
        """Identity's view of a user: every user a token names exists and is active."""
        return UserView(
            user_id=user_id, email=f"{user_id}@example.com", name=user_id,
            role=self.roles.get(user_id, "customer"), active=True, registered_at=datetime.now(UTC),
        )

    async def jwks(self) -> Jwks:
        self.fetches += 1
        return Jwks(keys=[self.key.jwk()])

    @staticmethod
    def claims(**changes: Any) -> dict[str, Any]:
        """Identity's claims for customer "ann"; a change to None leaves that claim out."""
        now = int(datetime.now(UTC).timestamp())
        base = {
            "iss": "emporium-identity", "aud": "emporium", "sub": "ann", "role": "customer",
            "iat": now, "exp": now + 900,
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

    def token(self, user_id: str = "ann", role: Role = "customer") -> str:
        self.roles[user_id] = role
        return self.signed(self.claims(sub=user_id, role=role))

    def headers(self, user_id: str = "ann", role: Role = "customer") -> dict[str, str]:
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
