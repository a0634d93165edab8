"""Gateway settings from the environment: refuse to start without what security needs."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings

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
    assert s.reserve_function == "reserve_tickets_batch", "coalesced pessimistic reserves by default"


def test_strategy_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from(monkeypatch, RESERVE_COALESCE="off").reserve_function == "reserve_tickets"
    assert settings_from(monkeypatch, RESERVE_STRATEGY="optimistic").reserve_function == "reserve_tickets_optimistic"
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
