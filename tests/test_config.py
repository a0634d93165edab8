"""Gateway settings from the environment: refuse to start without what security needs."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings
from gateway.onsale.reserve import function_for

BASE = {"GATEWAY_DATABASE_URL": "postgresql://booking_gateway@127.0.0.1:1/booking", "JWT_SECRET": "x" * 40}


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("GATEWAY_DATABASE_URL", "DATABASE_URL", "JWT_SECRET", "BOOKING_ENV", "RESERVE_STRATEGY",
                 "RESERVE_COALESCE", "POOL_MAX_SIZE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in {**BASE, **env}.items():
        if value:
            monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_defaults_follow_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from(monkeypatch)
    assert (s.pool_min, s.pool_max, s.pool_timeout, s.pool_max_idle) == (5, 20, 2.0, 30.0)
    assert s.cache_ttl == 300 and s.cache_sweep == 3600
    assert function_for(s.reserve_strategy, s.reserve_coalesce) == "reserve_tickets_batch", "coalesced by default"


def test_strategy_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    off = settings_from(monkeypatch, RESERVE_COALESCE="off")
    assert function_for(off.reserve_strategy, off.reserve_coalesce) == "reserve_tickets"
    optimistic = settings_from(monkeypatch, RESERVE_STRATEGY="optimistic")
    assert function_for(optimistic.reserve_strategy, optimistic.reserve_coalesce) == "reserve_tickets_optimistic"
    with pytest.raises(ConfigError):
        settings_from(monkeypatch, RESERVE_STRATEGY="yolo")


def test_no_secret_no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        settings_from(monkeypatch, JWT_SECRET="")
    with pytest.raises(ConfigError, match="32 characters"):
        settings_from(monkeypatch, BOOKING_ENV="production", JWT_SECRET="short")
    assert settings_from(monkeypatch, BOOKING_ENV="production").production


def test_bad_numbers_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="POOL_MAX_SIZE"):
        settings_from(monkeypatch, POOL_MAX_SIZE="lots")
