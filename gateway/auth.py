"""Tokens (PyJWT, HS256 only) and the caller's identity."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import anyio
import jwt

from gateway.errors import unauthorized
from gateway.passwords import DUMMY_HASH, hash_password, verify_password

ALGORITHM = "HS256"
ISSUER = "booking-gateway"
ROLES = ("user", "admin")
VERIFIED_CACHE_SIZE = 10000


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Auth:
    def __init__(self, secret: str, ttl: int, hash_concurrency: int) -> None:
        self._secret = secret
        self.ttl = ttl
        # argon2 is CPU- and memory-heavy: run it in threads, a few at a time.
        self._limiter = anyio.CapacityLimiter(hash_concurrency)
        # Tokens already verified, until they expire: onsale traffic repeats the same tokens,
        # and HMAC plus claim parsing on every request was a visible share of the hot path.
        # Keyed by the whole token (signature included), so nothing unverified can hit it.
        self._verified: dict[str, tuple[float, Principal]] = {}

    def issue(self, user_id: str, role: str) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "role": role, "iat": now, "exp": now + self.ttl, "iss": ISSUER}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def principal(self, authorization: str | None) -> Principal:
        """The caller from an `Authorization: Bearer <jwt>` header, or 401."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("a bearer token is required")
        hit = self._verified.get(token)
        if hit is not None and hit[0] > time.time():
            return hit[1]
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=[ALGORITHM],  # never "none", never another key type
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
            user_id = str(uuid.UUID(str(claims["sub"])))
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("the token has expired", invalid_token=True) from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise unauthorized("the token is invalid", invalid_token=True) from exc
        role = claims.get("role")
        if role not in ROLES:
            raise unauthorized("the token is invalid", invalid_token=True)
        principal = Principal(user_id, str(role))
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (float(claims["exp"]), principal)
        return principal

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(hash_password, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        # Unknown e-mail: verify against a dummy hash anyway, so timing does not tell.
        target = password_hash or DUMMY_HASH
        ok = await anyio.to_thread.run_sync(verify_password, target, password, limiter=self._limiter)
        return ok and password_hash is not None
