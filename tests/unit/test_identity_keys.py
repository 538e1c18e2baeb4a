"""Signing keys, their key set and the tokens they sign, checked the way a verifier would: PyJWT
against the published JWKS."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from actors.identity.keys import (
    CLOCK_SKEW,
    KeySeal,
    KeySealBroken,
    SigningKey,
    SigningKeyMissing,
    configured_key,
    issue_token,
    key_to_install,
    published,
    thumbprint,
)
from actors.identity.settings import IdentitySettings
from brokers.contracts.identity import TOKEN_AUDIENCE, TOKEN_ISSUER, Jwks

NOW = datetime(2024, 5, 4, 12, 0, tzinfo=UTC)
TTL = 900


def verify(token: str, jwks: Jwks, *, at: datetime | None = None) -> dict:
    """What the edge does: pick the key by kid from the JWKS, check signature, iss, aud and exp."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks.model_dump())[kid]
    options = {"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}
    if at is not None:  # tokens of a fixed past moment: check expiry against that moment
        options["verify_exp"] = False
    claims = jwt.decode(
        token, key.key, algorithms=["EdDSA"], audience=TOKEN_AUDIENCE, issuer=TOKEN_ISSUER, options=options
    )
    if at is not None and at.timestamp() >= claims["exp"]:
        raise jwt.ExpiredSignatureError("Signature has expired")
    return claims


def key_set(*keys: SigningKey) -> Jwks:
    return Jwks(keys=[k.jwk() for k in keys])


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate().activated(1, NOW - timedelta(days=1))


def test_a_token_carries_the_claims_and_the_key_id(key):
    token = issue_token("u-1", "customer", key, now=NOW, ttl_s=TTL)
    claims = verify(token.access_token, key_set(key), at=NOW)
    assert {k: claims[k] for k in ("sub", "role", "iss", "aud")} == {
        "sub": "u-1",
        "role": "customer",
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
    }
    assert (claims["iat"], claims["exp"]) == (int(NOW.timestamp()), int(NOW.timestamp()) + TTL)
    assert jwt.get_unverified_header(token.access_token) == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
    assert (token.token_type, token.expires_in) == ("Bearer", TTL)


def test_every_token_has_its_own_id(key):
    ids = {
        verify(issue_token("u-1", "admin", key, now=NOW, ttl_s=TTL).access_token, key_set(key), at=NOW)["jti"]
        for _ in range(3)
    }
    assert len(ids) == 3


def test_a_token_expires_after_its_lifetime(key):
    token = issue_token("u-1", "customer", key, now=NOW, ttl_s=TTL).access_token
    verify(token, key_set(key), at=NOW + timedelta(seconds=TTL - 1))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token, key_set(key), at=NOW + timedelta(seconds=TTL))
    fresh = issue_token("u-1", "customer", key, now=datetime.now(UTC) - timedelta(seconds=TTL + 1), ttl_s=TTL)
    with pytest.raises(jwt.ExpiredSignatureError):  # PyJWT's own clock check
        verify(fresh.access_token, key_set(key))


def test_another_key_does_not_verify_a_token(key):
    token = issue_token("u-1", "customer", key, now=NOW, ttl_s=TTL).access_token
    impostor = SigningKey.generate()
    forged = Jwks(keys=[impostor.jwk().model_copy(update={"kid": key.kid})])
    with pytest.raises(jwt.InvalidSignatureError):
        verify(token, forged, at=NOW)


def test_the_jwks_shape(key):
    (published_key,) = key_set(key).model_dump()["keys"]
    assert set(published_key) == {"kty", "crv", "x", "kid", "use", "alg"}
    assert {k: published_key[k] for k in ("kty", "crv", "use", "alg")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
    }
    assert published_key["kid"] == thumbprint(published_key["x"]) == key.kid
    assert "private_pem" not in repr(key) and "PRIVATE" not in repr(key)


def test_the_key_id_is_the_rfc7638_thumbprint():
    # RFC 8037, appendix A.3: the thumbprint of its example Ed25519 key.
    assert (
        thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )


def test_a_key_survives_its_pem():
    key = SigningKey.generate()
    assert SigningKey.from_pem(key.private_pem.encode()) == key


def rotation(count: int, every: timedelta) -> list[SigningKey]:
    return [SigningKey.generate().activated(n, NOW + (n - 1) * every) for n in range(1, count + 1)]


def test_after_a_rotation_old_and_new_tokens_verify_against_one_key_set():
    old, new = rotation(2, timedelta(minutes=1))
    old_token = issue_token("u-1", "customer", old, now=NOW, ttl_s=TTL).access_token
    new_token = issue_token("u-1", "customer", new, now=new.activated_at, ttl_s=TTL).access_token
    jwks = key_set(*published([old, new], now=new.activated_at, token_ttl_s=TTL))
    assert [k.kid for k in jwks.keys] == [new.kid, old.kid]  # the signing key first
    assert verify(old_token, jwks, at=new.activated_at)["sub"] == "u-1"
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    assert verify(new_token, jwks, at=new.activated_at)["sub"] == "u-1"


def test_a_replaced_key_is_published_until_its_last_token_has_expired():
    keys = rotation(3, timedelta(hours=1))
    third_activated = keys[2].activated_at
    still = third_activated + timedelta(seconds=TTL) + CLOCK_SKEW - timedelta(seconds=1)
    assert [k.generation for k in published(keys, now=still, token_ttl_s=TTL)] == [3, 2]
    later = still + timedelta(seconds=1)
    assert [k.generation for k in published(keys, now=later, token_ttl_s=TTL)] == [3]


def test_a_configured_key_is_installed_once_and_a_first_key_generated_once():
    configured = SigningKey.generate()
    assert key_to_install(configured, set()) == configured
    assert key_to_install(configured, {"other"}) == configured
    assert key_to_install(configured, {configured.kid}) is None
    assert key_to_install(None, {"other"}) is None
    assert key_to_install(None, set()) is not None


def test_production_refuses_to_start_without_a_configured_key():
    with pytest.raises(SigningKeyMissing, match="refusing to start in production"):
        configured_key(IdentitySettings(emporium_env="production"))
    for mode in ("development", "test"):
        assert configured_key(IdentitySettings(emporium_env=mode)) is None


def test_a_configured_key_is_read_from_its_file(tmp_path: Path):
    key = SigningKey.generate()
    path = tmp_path / "signing.pem"
    path.write_text(key.private_pem)
    settings = IdentitySettings(emporium_env="production", emporium_identity_signing_key_file=path)
    assert configured_key(settings) == key


@pytest.mark.parametrize("content", [None, b"not a key", b"rsa"])
def test_a_missing_or_unusable_key_file_is_a_clear_refusal(tmp_path: Path, content):
    path = tmp_path / "signing.pem"
    if content == b"rsa":
        content = rsa.generate_private_key(65537, 2048).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SigningKeyMissing, match=f"cannot use the signing key in {path}"):
        configured_key(IdentitySettings(emporium_identity_signing_key_file=path))


# --- the private halves at rest -----------------------------------------------------------------


def _seal(*keys: str, env: str = "development") -> KeySeal:
    return KeySeal.of(
        IdentitySettings(emporium_env=env, emporium_identity_key_encryption_keys=",".join(keys))
    )


def test_a_sealed_private_half_shows_nothing_of_the_key_and_opens_again():
    key = SigningKey.generate()
    seal = _seal(Fernet.generate_key().decode())
    stored = seal.stored(key.private_pem)
    assert set(stored) == {"sealed_pem"}
    body = "".join(key.private_pem.splitlines()[1:-1])
    assert "PRIVATE KEY" not in stored["sealed_pem"] and body not in stored["sealed_pem"]
    assert seal.opened(stored) == key.private_pem
    assert not seal.needs_resealing(stored)


def test_without_encryption_keys_development_keeps_the_private_half_in_clear():
    seal = KeySeal.of(IdentitySettings(emporium_env="development"))
    pem = SigningKey.generate().private_pem
    assert seal.stored(pem) == {"private_pem": pem}
    assert seal.opened({"private_pem": pem}) == pem


def test_production_without_encryption_keys_refuses_to_start():
    for keys in (None, "", " , "):
        with pytest.raises(KeySealBroken, match="refusing to start in production"):
            KeySeal.of(
                IdentitySettings(emporium_env="production", emporium_identity_key_encryption_keys=keys)
            )


def test_after_a_rotation_keys_sealed_before_open_and_need_resealing():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    pem = SigningKey.generate().private_pem
    under_old = _seal(old).stored(pem)
    rotated = _seal(new, old)
    assert rotated.opened(under_old) == pem
    assert rotated.needs_resealing(under_old)
    assert rotated.needs_resealing({"private_pem": pem})  # kept in clear before keys were configured
    assert not rotated.needs_resealing(rotated.stored(pem))


def test_a_sealed_key_nothing_configured_opens_is_a_clear_refusal():
    key = Fernet.generate_key().decode()
    sealed = _seal(key).stored(SigningKey.generate().private_pem)
    with pytest.raises(KeySealBroken, match="no key in EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS opens"):
        _seal(Fernet.generate_key().decode()).opened(sealed)
    with pytest.raises(KeySealBroken, match="stored encrypted: set EMPORIUM_IDENTITY_KEY_ENCRYPTION_KEYS"):
        KeySeal.of(IdentitySettings()).opened(sealed)
    tampered = {"sealed_pem": sealed["sealed_pem"][:-8] + "AAAAAAAA"}
    with pytest.raises(KeySealBroken):  # authenticated: a changed byte opens nothing
        _seal(key).opened(tampered)


@pytest.mark.parametrize("bad", ["short", "x" * 44, Fernet.generate_key().decode()[:-2], "é" * 44])
def test_a_malformed_encryption_key_is_a_clear_refusal(bad: str):
    with pytest.raises(KeySealBroken, match="32 url-safe base64-encoded bytes"):
        _seal(bad)
