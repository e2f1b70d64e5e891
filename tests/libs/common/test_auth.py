"""Bearer tokens: what a valid token grants, and every way a token is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from libs.common.auth import (
    AUDIENCE,
    MIN_SECRET_BYTES,
    AuthError,
    Principal,
    TokenVerifier,
    main,
    mint_token,
)

SECRET = "test-auth-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-0123456789abcdefgh"
NOW = datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
UNIT_GRID = "430281001001001"


def make_token(**overrides: Any) -> str:
    values: dict[str, Any] = {
        "secret": SECRET,
        "subject": "W0001",
        "role": "grid_worker",
        "scopes": ["reports:write", "visits:write"],
        "grids": [UNIT_GRID],
        "now": NOW,
        "ttl": timedelta(hours=1),
    }
    values.update(overrides)
    return mint_token(**values)


def make_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "W0001",
        "role": "grid_worker",
        "scope": "reports:write",
        "grids": [UNIT_GRID],
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
    }
    claims.update(overrides)
    return claims


def encode_claims(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def refusal(token: str, *, now: datetime = NOW) -> AuthError:
    with pytest.raises(AuthError) as refused:
        TokenVerifier(secret=SECRET).verify(token, now=now)
    return refused.value


def test_a_minted_token_verifies_to_its_principal() -> None:
    principal = TokenVerifier(secret=SECRET).verify(make_token(), now=NOW)

    assert principal == Principal(
        subject="W0001",
        role="grid_worker",
        scopes=frozenset({"reports:write", "visits:write"}),
        grids=(UNIT_GRID,),
    )
    principal.require("reports:write")


def test_the_token_is_an_hs256_jwt_for_gridflow() -> None:
    header = jwt.get_unverified_header(make_token())
    claims = jwt.decode(
        make_token(),
        SECRET,
        algorithms=["HS256"],
        audience=AUDIENCE,
        options={"verify_exp": False},
    )

    assert header["alg"] == "HS256"
    assert claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 3600


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    token = make_token(ttl=timedelta(minutes=5))
    verifier = TokenVerifier(secret=SECRET, leeway_seconds=30)

    verifier.verify(token, now=NOW + timedelta(minutes=5, seconds=30))
    error = refusal(token, now=NOW + timedelta(minutes=5, seconds=31))
    assert (error.status, error.reason) == (401, "invalid token: expired")


def test_a_token_signed_with_another_key_is_refused() -> None:
    error = refusal(make_token(secret=OTHER_SECRET))

    assert error.status == 401
    assert "Signature verification failed" in error.reason


def test_a_token_for_another_audience_is_refused() -> None:
    error = refusal(encode_claims(make_claims(aud="another-platform")))

    assert error.status == 401
    assert "audience" in error.reason.lower()


@pytest.mark.parametrize("claim", ["sub", "aud", "exp"])
def test_a_token_missing_a_required_claim_is_refused(claim: str) -> None:
    claims = make_claims()
    del claims[claim]

    error = refusal(encode_claims(claims))

    assert error.status == 401
    assert claim in error.reason


@pytest.mark.parametrize("grids", [UNIT_GRID, {"unit": UNIT_GRID}, [430281001001001]])
def test_grids_must_be_a_list_of_codes(grids: object) -> None:
    error = refusal(encode_claims(make_claims(grids=grids)))

    assert (error.status, error.reason) == (401, "invalid token: grids must be a list of codes")


def test_a_token_that_is_not_a_jwt_is_refused() -> None:
    error = refusal("not.a.token")

    assert error.status == 401
    assert error.reason.startswith("invalid token:")


def test_an_unsigned_token_is_refused() -> None:
    error = refusal(jwt.encode(make_claims(), None, algorithm="none"))

    assert error.status == 401
    assert "alg value is not allowed" in error.reason


def test_missing_optional_claims_give_an_empty_principal() -> None:
    claims = make_claims()
    for name in ("role", "scope", "grids"):
        del claims[name]

    principal = TokenVerifier(secret=SECRET).verify(encode_claims(claims), now=NOW)

    assert principal == Principal(subject="W0001", role="", scopes=frozenset(), grids=())


def test_require_refuses_a_missing_scope_with_403() -> None:
    principal = TokenVerifier(secret=SECRET).verify(make_token(scopes=["reports:write"]), now=NOW)

    with pytest.raises(AuthError) as refused:
        principal.require("cases:assign")

    assert refused.value.status == 403
    assert refused.value.reason == "token lacks scope 'cases:assign'"


def test_secrets_shorter_than_32_bytes_are_refused() -> None:
    short = "x" * (MIN_SECRET_BYTES - 1)

    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(secret=short)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        make_token(secret=short)
    TokenVerifier(secret="x" * MIN_SECRET_BYTES)
    TokenVerifier(secret="网格" * 6)  # 12 characters, 36 bytes in UTF-8


def test_main_mints_a_token_signed_with_the_named_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDFLOW_WORKER_JWT_SECRET", SECRET)

    assert main(["mint", "--sub", "W0042", "--grids", UNIT_GRID, "--scope", "reports:write"]) == 0

    token = capsys.readouterr().out.strip()
    principal = TokenVerifier(secret=SECRET).verify(token, now=datetime.now(UTC))
    assert (principal.subject, principal.grids) == ("W0042", (UNIT_GRID,))
    assert principal.scopes == frozenset({"reports:write"})


def test_main_refuses_to_mint_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GRIDFLOW_WORKER_JWT_SECRET", raising=False)

    assert main(["mint", "--sub", "W0042"]) == 2
    assert "GRIDFLOW_WORKER_JWT_SECRET is not set" in capsys.readouterr().err


def test_a_token_minted_at_now_verifies_at_now_whatever_the_wall_clock() -> None:
    later = datetime(2035, 1, 1, tzinfo=UTC)

    TokenVerifier(secret=SECRET).verify(make_token(now=later), now=later)


def test_a_non_numeric_exp_is_refused_with_401() -> None:
    error = refusal(encode_claims(make_claims(exp="soon")))

    assert error.status == 401
