"""The signing keys, the key set that publishes them, and the access tokens they sign.

Keys are Ed25519 (JWS algorithm EdDSA). A key's id is its RFC 7638 thumbprint, so the same key
always has the same id: importing a configured key again changes nothing. Keys are activated in
order (``generation``); the latest signs. A key that was replaced stays published for as long as
tokens it signed can still be valid, so rotation logs nobody out.

A key's private half is stored encrypted (``KeySeal``: Fernet, authenticated AES) under the keys
``EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS`` names, which live outside the database: a copy of the
database alone signs no token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import jwt
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from actors.identity.settings import IdentitySettings
from brokers.contracts.common import EntityId
from brokers.contracts.identity import TOKEN_ALGORITHM, TOKEN_AUDIENCE, TOKEN_ISSUER, AccessToken, Jwk, Role

# Clocks of the edge replicas may run a little apart from identity's.
CLOCK_SKEW = timedelta(seconds=60)


def _ed25519(pem: bytes) -> Ed25519PrivateKey:
    private = load_pem_private_key(pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"the signing key must be Ed25519, not {type(private).__name__}")
    return private


class SigningKeyMissing(RuntimeError):
    """Production without a configured signing key: identity refuses to start."""


class KeySealBroken(RuntimeError):
    """The stored signing keys cannot be opened with the configured encryption keys, or production
    has none: identity refuses to start rather than sign with nothing or store a key in clear."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(x: str) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str = field(repr=False)
    x: str
    # Keys sign in turn: the one with the highest generation signs new tokens.
    generation: int = 0
    activated_at: datetime | None = None

    @classmethod
    def generate(cls) -> SigningKey:
        return cls._of(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        return cls._of(_ed25519(pem))

    @classmethod
    def _of(cls, private: Ed25519PrivateKey) -> SigningKey:
        x = _b64url(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        return cls(kid=thumbprint(x), private_pem=pem, x=x)

    def activated(self, generation: int, at: datetime) -> SigningKey:
        return replace(self, generation=generation, activated_at=at)

    def jwk(self) -> Jwk:
        return Jwk(x=self.x, kid=self.kid)

    def sign(self, claims: dict) -> str:
        private = _ed25519(self.private_pem.encode())
        return jwt.encode(claims, private, algorithm=TOKEN_ALGORITHM, headers={"kid": self.kid})


class KeySeal:
    """Encrypts signing keys' private halves for the database, and decrypts them.

    A stored key is ``{"sealed_pem": <Fernet token>}`` under encryption keys, ``{"private_pem":
    <PEM>}`` without (development only). ``stored`` and ``opened`` are each other's inverse;
    ``needs_resealing`` says which stored keys to write again: kept in clear, or encrypted under a key
    that is no longer the first.
    """

    def __init__(self, encryption_keys: list[str]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(key) for key in encryption_keys]) if encryption_keys else None
        except ValueError as exc:
            raise KeySealBroken(
                "EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes "
                "(Fernet.generate_key())"
            ) from exc
        self._first = Fernet(encryption_keys[0]) if encryption_keys else None

    @classmethod
    def of(cls, settings: IdentitySettings) -> KeySeal:
        secret = settings.emporium_identity_key_encryption_keys
        keys = [k.strip() for k in secret.get_secret_value().split(",") if k.strip()] if secret else []
        if not keys and settings.emporium_env == "production":
            raise KeySealBroken(
                "refusing to start in production without EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS: the signing "
                "keys would be stored in clear"
            )
        return cls(keys)

    def stored(self, private_pem: str) -> dict[str, str]:
        if self._fernet is None:
            return {"private_pem": private_pem}
        return {"sealed_pem": self._fernet.encrypt(private_pem.encode()).decode()}

    def opened(self, doc: dict[str, str]) -> str:
        if "private_pem" in doc:
            return doc["private_pem"]
        if self._fernet is None:
            raise KeySealBroken(
                "the signing keys are stored encrypted: set EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS to the keys "
                "that encrypted them"
            )
        try:
            return self._fernet.decrypt(doc["sealed_pem"].encode()).decode()
        except InvalidToken as exc:
            raise KeySealBroken(
                "no key in EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS opens a stored signing key: keep the key "
                "that encrypted it in the list (after the new one) until identity has started once"
            ) from exc

    def needs_resealing(self, doc: dict[str, str]) -> bool:
        if self._first is None:
            return False
        if "private_pem" in doc:
            return True
        try:
            self._first.decrypt(doc["sealed_pem"].encode())
        except InvalidToken:
            return True
        return False


def issue_token(user_id: EntityId, role: Role, key: SigningKey, *, now: datetime, ttl_s: int) -> AccessToken:
    issued_at = int(now.timestamp())
    claims = {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": user_id,
        "role": role,
        "iat": issued_at,
        "exp": issued_at + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return AccessToken(access_token=key.sign(claims), expires_in=ttl_s)


def published(keys: Sequence[SigningKey], *, now: datetime, token_ttl_s: int) -> list[SigningKey]:
    """The keys tokens may still carry, newest (the signing one) first.

    A replaced key signed its last token when its successor was activated; that token expires a
    token lifetime later (plus clock skew), and then the key has nothing left to verify.
    """
    newest_first = sorted(keys, key=lambda k: k.generation, reverse=True)
    keep = newest_first[:1]
    for replaced, successor in zip(newest_first[1:], newest_first, strict=False):
        if (
            successor.activated_at is not None
            and now < successor.activated_at + timedelta(seconds=token_ttl_s) + CLOCK_SKEW
        ):
            keep.append(replaced)
    return keep


def key_to_install(configured: SigningKey | None, installed: set[str]) -> SigningKey | None:
    """What to install at start: the configured key unless it is installed already; without one, a
    generated key when there is none at all (a development database's first start)."""
    if configured is None:
        return None if installed else SigningKey.generate()
    return None if configured.kid in installed else configured


def configured_key(settings: IdentitySettings) -> SigningKey | None:
    """The signing key the operators configured; None lets identity generate one, except in production."""
    path = settings.emporium_identity_signing_key_file
    if path is None:
        if settings.emporium_env == "production":
            raise SigningKeyMissing(
                "refusing to start in production without a signing key: set "
                "EMPORIUM_IDENTITY_SIGNING_KEY_FILE to an Ed25519 private key in PEM "
                "(e.g. `openssl genpkey -algorithm ed25519`)"
            )
        return None
    try:
        return SigningKey.from_pem(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyMissing(f"cannot use the signing key in {path}: {exc}") from exc
