"""Bearer tokens at the edge: what is accepted, and every way of forging one that must be refused.

Tokens come from a key of the test's own, served to the real edge as identity's key set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from actors.identity.keys import SigningKey
from brokers.rpc import QueryTimeout
from edge.auth import KEYSET_MAX_AGE_S, KEYSET_REFRESH_S, KeySet, KeysUnavailable
from tests.unit.edge_tokens import Mint, forged_tokens, offline_edge

MINT = Mint()
ME = "/auth/me"


@pytest.fixture
async def edge() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(offline_edge(MINT)), base_url="http://edge"
    ) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_of_identity_gets_past_the_door(edge):
    # Verified, the request goes on to ask identity who this is: RabbitMQ is not there (503).
    response = await edge.get(ME, headers=bearer(MINT.token()))
    assert response.status_code == 503


FORGED = forged_tokens(MINT)


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
async def test_a_forged_or_unfit_token_is_refused_401(edge, forge):
    response = await edge.get(ME, headers=bearer(forge()))

    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="emporium", error="invalid_token"'
    assert response.json()["detail"].startswith("the access token")


async def test_an_expired_token_says_to_log_in_again(edge):
    response = await edge.get(ME, headers=bearer(MINT.signed(MINT.claims(iat=1_000, exp=2_000))))
    assert response.json()["detail"] == "the access token has expired: log in again"


async def test_made_up_key_ids_do_not_make_the_edge_ask_identity_for_each(edge):
    before = MINT.fetches
    for _ in range(20):
        forged = MINT.signed(MINT.claims(), key=SigningKey.generate())
        assert (await edge.get(ME, headers=bearer(forged))).status_code == 401
    # At most one refresh per KEYSET_REFRESH_S, whatever the number of unknown key ids.
    assert MINT.fetches - before <= 1, KEYSET_REFRESH_S


async def test_a_signed_in_route_without_a_token_asks_for_one(edge):
    response = await edge.get(ME)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="emporium"'
    assert response.json()["detail"] == "this route needs an access token: POST /auth/login"


@pytest.mark.parametrize("value", ["Bearer", "Basic YTpi", "Token abc", "bearer"])
async def test_an_authorization_header_that_is_not_a_bearer_token_is_refused(edge, value):
    response = await edge.get("/products", headers={"Authorization": value})
    assert response.status_code == 401


async def test_an_old_key_set_is_asked_for_again_and_a_retired_key_is_dropped():
    mint = Mint()
    keys = KeySet(mint.jwks)
    kid = mint.key.kid
    assert await keys.key(kid) is not None
    mint.key = SigningKey.generate()  # identity rotated, and no longer publishes the old key

    assert await keys.key(kid) is not None  # still trusted while the set is fresh
    keys._fetched_at -= KEYSET_MAX_AGE_S
    assert await keys.key(kid) is None
    assert mint.fetches == 2


async def test_while_identity_is_away_the_known_keys_stay_trusted():
    mint = Mint()
    answers: list = [mint.jwks]

    async def fetch():
        return await answers[-1]()

    keys = KeySet(fetch)
    assert await keys.key(mint.key.kid) is not None

    async def away():
        raise QueryTimeout("identity.get_signing_keys")

    answers.append(away)
    keys._fetched_at -= KEYSET_MAX_AGE_S
    assert await keys.key(mint.key.kid) is not None  # stale, identity silent: kept
    with pytest.raises(KeysUnavailable):
        await keys.key(SigningKey.generate().kid)  # an unknown key cannot be checked: 503
