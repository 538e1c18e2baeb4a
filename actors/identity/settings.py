"""Identity's own settings, read from the environment and the secret files like ``brokers.settings``
(the same ``EMPORIUM_ENV``), because the key set-up runs where only identity's code is: its store's
``prepare``."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from brokers.contracts.identity import TOKEN_MAX_LIFETIME_S
from brokers.settings import SecretFileSettings


class IdentitySettings(SecretFileSettings):
    emporium_env: Literal["development", "test", "production"] = "development"
    # An Ed25519 private key (PEM, PKCS#8, unencrypted), e.g. a mounted secret. Required in
    # production; in any mode it is imported at start and becomes the signing key if it is new.
    emporium_identity_signing_key_file: Path | None = None
    # The keys that encrypt the signing keys' private halves in the database (Fernet keys, e.g.
    # `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`),
    # separated by commas: the first encrypts, the others only decrypt what earlier ones encrypted
    # (rotation: put the new key first; at start every stored key is encrypted again with it).
    # Required in production; unset in development, the private halves are stored in clear.
    emporium_identity_key_encryption_keys: SecretStr | None = None
    # Lifetime of an access token: short, since a token cannot be revoked before it expires.
    emporium_identity_token_ttl_s: int = Field(900, ge=60, le=TOKEN_MAX_LIFETIME_S)


@lru_cache
def identity_settings() -> IdentitySettings:
    return IdentitySettings()
