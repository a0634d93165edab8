"""Tokens (PyJWT, HS256 only), refresh tokens, and the caller's identity.

An access token carries its session (`sid`); it is refused once that session is on the
deny-list (gateway/revocations.py), and a role change made after it was issued overrides its
`role`. Both checks are dict lookups after the verified-token cache. Refresh tokens are opaque
(32 random bytes, base64url); the database only ever sees their sha256.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass

import anyio
import jwt

from gateway.errors import busy, unauthorized
from gateway.passwords import DUMMY_HASH, hash_password, verify_password
from gateway.revocations import Revocations

ALGORITHM = "HS256"
ISSUER = "booking-gateway"
ROLES = ("user", "admin")
VERIFIED_CACHE_SIZE = 10000
REFRESH_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # what new_refresh_token() makes


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    session_id: str = ""

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
        # Value: (exp, principal as issued).
        self._verified: dict[str, tuple[float, Principal]] = {}
        self.revocations = Revocations()

    def issue(self, user_id: str, role: str, session_id: str) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "role": role, "sid": session_id, "iat": now, "exp": now + self.ttl, "iss": ISSUER}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def principal(self, authorization: str | None) -> Principal:
        """The caller from an `Authorization: Bearer <jwt>` header, or 401."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("a bearer token is required")
        hit = self._verified.get(token)
        if hit is None or hit[0] <= time.time():
            hit = self._verify(token)
        # Checked on every request, cache hit or not: revocations and role changes apply at once.
        revocations = self.revocations
        principal = hit[1]
        if principal.session_id in revocations.sessions:
            raise unauthorized("the session has ended", invalid_token=True)
        if not revocations.loaded:
            raise busy()  # nothing known about revocations yet: do not guess
        # The user's latest role change (kept 24 h, longer than any token lives) is their role
        # now, whatever the token says: no comparison with the token's iat, which comes from
        # another clock and could be stamped after a change its role read did not see yet.
        change = revocations.roles.get(principal.user_id)
        if change is not None and change[0] != principal.role:
            return Principal(principal.user_id, change[0], principal.session_id)
        return principal

    def _verify(self, token: str) -> tuple[float, Principal]:
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=[ALGORITHM],  # never "none", never another key type
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "sid"]},
            )
            user_id = str(uuid.UUID(str(claims["sub"])))
            session_id = str(uuid.UUID(str(claims["sid"])))
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("the token has expired", invalid_token=True) from exc
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise unauthorized("the token is invalid", invalid_token=True) from exc
        role = claims.get("role")
        if role not in ROLES:
            raise unauthorized("the token is invalid", invalid_token=True)
        entry = (float(claims["exp"]), Principal(user_id, str(role), session_id))
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = entry
        return entry

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(hash_password, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        # Unknown e-mail: verify against a dummy hash anyway, so timing does not tell.
        target = password_hash or DUMMY_HASH
        ok = await anyio.to_thread.run_sync(verify_password, target, password, limiter=self._limiter)
        return ok and password_hash is not None


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_hash(token: str) -> bytes | None:
    """The sha256 the database stores, or None for a string we could not have issued."""
    if not REFRESH_TOKEN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).digest()
