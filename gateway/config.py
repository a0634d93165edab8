"""Gateway settings, all from the environment (README lists them)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigError(RuntimeError):
    pass


def _int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer") from exc


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number") from exc


@dataclass(frozen=True)
class Settings:
    database_url: str
    jwt_secret: str
    production: bool = False
    token_ttl: int = 3600
    pool_min: int = 5
    pool_max: int = 20
    pool_timeout: float = 2.0
    pool_max_idle: float = 30.0
    cache_ttl: float = 300.0
    cache_sweep: float = 3600.0
    cache_max_entries: int = 1000
    reserve_strategy: str = "pessimistic"
    reserve_coalesce: bool = True
    reserve_batch_max: int = 50
    max_body_bytes: int = 65536
    hash_concurrency: int = 4

    @classmethod
    def from_env(cls) -> Settings:
        production = os.environ.get("BOOKING_ENV", "development") == "production"
        url = os.environ.get("GATEWAY_DATABASE_URL") or os.environ.get("DATABASE_URL")
        if not url:
            raise ConfigError("GATEWAY_DATABASE_URL is not set (make run sets it for the local database)")
        secret = os.environ.get("JWT_SECRET", "")
        if not secret:
            raise ConfigError("JWT_SECRET is not set (make run generates one in .local/ for local use)")
        if production and len(secret) < 32:
            raise ConfigError("JWT_SECRET must be at least 32 characters in production")
        strategy = os.environ.get("RESERVE_STRATEGY", "pessimistic")
        if strategy not in ("pessimistic", "optimistic"):
            raise ConfigError("RESERVE_STRATEGY must be one of pessimistic, optimistic")
        return cls(
            database_url=url,
            jwt_secret=secret,
            production=production,
            token_ttl=_int("JWT_TTL_SECONDS", 3600),
            pool_min=_int("POOL_MIN_SIZE", 5),
            pool_max=_int("POOL_MAX_SIZE", 20),
            pool_timeout=_float("POOL_TIMEOUT_SECONDS", 2.0),
            pool_max_idle=_float("POOL_MAX_IDLE_SECONDS", 30.0),
            cache_ttl=_float("EVENTS_CACHE_TTL_SECONDS", 300.0),
            cache_sweep=_float("EVENTS_CACHE_SWEEP_SECONDS", 3600.0),
            reserve_strategy=strategy,
            reserve_coalesce=os.environ.get("RESERVE_COALESCE", "on").lower() in ("on", "1", "true", "yes"),
            reserve_batch_max=_int("RESERVE_BATCH_MAX", 50),
            max_body_bytes=_int("MAX_BODY_BYTES", 65536),
        )
