"""Bearer tokens: HS256 JWTs verified with a key from the environment, scoped per action.

Claims: `sub` (who), `role` (grid_worker, operator, department, client), `scope` (space-separated),
`grids` (unit-grid or town codes the subject serves), `aud` = "gridflow", `exp` required.
`python -m libs.common.auth mint --sub W001 --grids 430281001001001 --scope reports:write`
prints a token signed with $GRIDFLOW_WORKER_JWT_SECRET (for demos and tests, never for production use).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

AUDIENCE = "gridflow"
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    scopes: frozenset[str]
    grids: tuple[str, ...]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise AuthError(403, f"token lacks scope {scope!r}")


def check_secret(secret: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"JWT secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


class TokenVerifier:
    """Verifies tokens; a token whose signature was verified once is remembered (its times are
    still checked on every use), since a worker's app sends the same token all day."""

    def __init__(self, *, secret: str, leeway_seconds: int = 30, cache_size: int = 10_000) -> None:
        self._secret = check_secret(secret)
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[Principal, dict[str, Any]]] = OrderedDict()

    def verify(self, token: str, *, now: datetime) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            self._verified.move_to_end(token)
            principal, claims = known
            self._check_times(claims, now.timestamp())
            return principal
        principal, claims = self._decode(token)
        self._check_times(claims, now.timestamp())
        self._verified[token] = (principal, claims)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, dict[str, Any]]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                leeway=self._leeway,
                # times are checked below against the injected clock, not the machine's
                options={
                    "require": ["exp", "sub", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {exc}") from exc
        self._check_time_types(claims)
        grids = claims.get("grids", [])
        if not isinstance(grids, list) or not all(isinstance(g, str) for g in grids):
            raise AuthError(401, "invalid token: grids must be a list of codes")
        principal = Principal(
            subject=str(claims["sub"]),
            role=str(claims.get("role", "")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            grids=tuple(grids),
        )
        return principal, {k: claims[k] for k in ("exp", "nbf", "iat") if k in claims}

    @staticmethod
    def _check_time_types(claims: dict[str, Any]) -> None:
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise AuthError(401, f"invalid token: {name} must be a number")

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if name == "exp" and value + self._leeway < now:
                raise AuthError(401, "invalid token: expired")
            if name in ("nbf", "iat") and value - self._leeway > now:
                raise AuthError(401, f"invalid token: not yet valid ({name})")


def mint_token(
    *,
    secret: str,
    subject: str,
    role: str,
    scopes: list[str],
    grids: list[str],
    now: datetime,
    ttl: timedelta,
) -> str:
    claims = {
        "sub": subject,
        "role": role,
        "scope": " ".join(scopes),
        "grids": grids,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, check_secret(secret), algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    from libs.common.clock import SystemClock  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m libs.common.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="print a signed token")
    mint.add_argument("--sub", required=True)
    mint.add_argument("--role", default="grid_worker")
    mint.add_argument("--scope", action="append", default=[])
    mint.add_argument("--grids", nargs="*", default=[])
    mint.add_argument("--hours", type=float, default=12)
    mint.add_argument("--secret-env", default="GRIDFLOW_WORKER_JWT_SECRET")
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"{args.secret_env} is not set", file=sys.stderr)  # noqa: T201
        return 2
    token = mint_token(
        secret=secret,
        subject=args.sub,
        role=args.role,
        scopes=args.scope or ["reports:write"],
        grids=args.grids,
        now=SystemClock().now(),
        ttl=timedelta(hours=args.hours),
    )
    print(token)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
