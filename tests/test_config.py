"""Gateway settings from the environment: documented names, wrong values refused with the
variable named, secrets never shown."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, ServerSettings, Settings
from gateway.onsale.reserve import function_for

ROOT = Path(__file__).resolve().parent.parent
URL = "postgresql://booking_gateway:db-password-42@127.0.0.1:1/booking"
SECRET = "jwt-secret-" + "x" * 40
BASE = {"GATEWAY_DATABASE_URL": URL, "JWT_SECRET": SECRET}


def from_env(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def refused(match: str, **env: str) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        from_env(**env)
    return str(info.value)


def test_defaults_follow_the_seed() -> None:
    s = from_env()
    assert (s.pool_min, s.pool_max, s.pool_timeout, s.pool_max_idle) == (5, 20, 2.0, 30.0)
    assert s.cache_ttl == 300 and s.cache_sweep == 3600
    assert (s.token_ttl, s.reserve_batch_max, s.max_body_bytes, s.production) == (900, 50, 65536, False)
    assert function_for(s.reserve_strategy, s.reserve_coalesce) == "reserve_tickets_batch", "coalesced by default"


def test_every_documented_variable_is_read_by_its_name() -> None:
    s = from_env(
        JWT_TTL_SECONDS="60", POOL_MIN_SIZE="2", POOL_MAX_SIZE="3", POOL_TIMEOUT_SECONDS="0.5",
        POOL_MAX_IDLE_SECONDS="9", EVENTS_CACHE_TTL_SECONDS="7", EVENTS_CACHE_SWEEP_SECONDS="8",
        RESERVE_STRATEGY="optimistic", RESERVE_COALESCE="off", RESERVE_BATCH_MAX="9", MAX_BODY_BYTES="1024",
        BOOKING_ENV="production", JOIN_BATCH_MAX="11", ALLOW_INSTANT_PAYMENTS="yes",
    )  # fmt: skip
    assert (s.token_ttl, s.pool_min, s.pool_max, s.pool_timeout, s.pool_max_idle) == (60, 2, 3, 0.5, 9)
    assert (s.cache_ttl, s.cache_sweep, s.reserve_strategy, s.reserve_coalesce) == (7, 8, "optimistic", False)
    assert (s.reserve_batch_max, s.max_body_bytes, s.production) == (9, 1024, True)
    assert (s.join_batch_max, from_env().join_batch_max) == (11, 200)
    # Every variable the README's table lists for the gateway is one the settings read.
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    read = {name for cls in (Settings, ServerSettings) for names in cls.env_names().values() for name in names}
    assert read <= documented, read - documented


def test_database_url_falls_back_to_database_url_and_empty_means_unset() -> None:
    s = Settings.from_env({"GATEWAY_DATABASE_URL": "", "DATABASE_URL": "postgresql://owner@h/db", "JWT_SECRET": "k"})
    assert s.database_url.get_secret_value() == "postgresql://owner@h/db"
    assert "GATEWAY_DATABASE_URL" in refused("is not set", GATEWAY_DATABASE_URL="")


def test_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**BASE, "POOL_MAX_SIZE": "7"}.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().pool_max == 7


def reserve_function(s: Settings) -> str:
    return function_for(s.reserve_strategy, s.reserve_coalesce)


def test_strategy_switches() -> None:
    assert reserve_function(from_env(RESERVE_COALESCE="off")) == "reserve_tickets"
    assert reserve_function(from_env(RESERVE_COALESCE="OFF")) == "reserve_tickets"
    assert reserve_function(from_env(RESERVE_COALESCE="1")) == "reserve_tickets_batch"
    assert reserve_function(from_env(RESERVE_STRATEGY="optimistic")) == "reserve_tickets_optimistic"
    refused("RESERVE_STRATEGY.*'yolo'", RESERVE_STRATEGY="yolo")


def test_no_secret_no_start() -> None:
    refused("JWT_SECRET: is not set", JWT_SECRET="")
    refused("32 characters", BOOKING_ENV="production", JWT_SECRET="short")
    assert from_env(BOOKING_ENV="production", ALLOW_INSTANT_PAYMENTS="yes").production
    refused("BOOKING_ENV", BOOKING_ENV="prod")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RESERVE_COALESCE": "enabled"}, "RESERVE_COALESCE"),  # was silently "off"
        ({"RESERVE_COALESCE": ""}, None),  # empty means unset: the default
        ({"POOL_MAX_SIZE": "lots"}, "POOL_MAX_SIZE"),
        ({"POOL_MAX_SIZE": "0"}, "POOL_MAX_SIZE"),  # was accepted
        ({"POOL_MIN_SIZE": "-1"}, "POOL_MIN_SIZE"),
        ({"POOL_MIN_SIZE": "21"}, "POOL_MIN_SIZE must not exceed POOL_MAX_SIZE"),
        ({"POOL_MIN_SIZE": "4", "POOL_MAX_SIZE": "3"}, "POOL_MIN_SIZE must not exceed POOL_MAX_SIZE"),
        ({"POOL_TIMEOUT_SECONDS": "-1"}, "POOL_TIMEOUT_SECONDS"),
        ({"POOL_TIMEOUT_SECONDS": "0"}, "POOL_TIMEOUT_SECONDS"),
        ({"POOL_TIMEOUT_SECONDS": "nan"}, "POOL_TIMEOUT_SECONDS"),
        ({"POOL_MAX_IDLE_SECONDS": "-5"}, "POOL_MAX_IDLE_SECONDS"),
        ({"EVENTS_CACHE_TTL_SECONDS": "-1"}, "EVENTS_CACHE_TTL_SECONDS"),
        ({"EVENTS_CACHE_SWEEP_SECONDS": "0"}, "EVENTS_CACHE_SWEEP_SECONDS"),  # would spin
        ({"JWT_TTL_SECONDS": "0"}, "JWT_TTL_SECONDS"),
        ({"RESERVE_BATCH_MAX": "0"}, "RESERVE_BATCH_MAX"),
        ({"RESERVE_BATCH_MAX": "1001"}, "RESERVE_BATCH_MAX"),  # the batch function refuses > 1000
        ({"JOIN_BATCH_MAX": "0"}, "JOIN_BATCH_MAX"),
        ({"JOIN_BATCH_MAX": "1001"}, "JOIN_BATCH_MAX"),  # api.join_waiting_room_batch refuses > 1000
        ({"MAX_BODY_BYTES": "-1"}, "MAX_BODY_BYTES"),
        ({"RESERVE_STRATEGY": "Pessimistic"}, "RESERVE_STRATEGY"),
    ],
)
def test_wrong_values_are_refused_naming_the_variable(env: dict[str, str], named: str | None) -> None:
    if named is None:
        assert from_env(**env) == from_env()
        return
    message = refused(re.escape(named), **env)
    assert message.startswith("invalid gateway settings: ")


def test_several_problems_are_reported_together() -> None:
    message = refused("POOL_MAX_SIZE", POOL_MAX_SIZE="0", RESERVE_COALESCE="enabled", JWT_SECRET="")
    assert "RESERVE_COALESCE" in message and "JWT_SECRET" in message


def test_direct_construction_validates_and_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_MAX_SIZE", "0")  # would be refused if read
    s = Settings(database_url=URL, jwt_secret=SECRET, pool_max=8)
    assert s.pool_max == 8 and s.pool_min == 5
    assert s.replace(pool_min=1).pool_min == 1
    with pytest.raises(ConfigError, match="POOL_MAX_SIZE"):
        Settings(database_url=URL, jwt_secret=SECRET, pool_max=0)
    with pytest.raises(ConfigError, match="pool_maxx"):
        Settings(database_url=URL, jwt_secret=SECRET, pool_maxx=3)  # a typo is not silently ignored
    with pytest.raises(ConfigError, match="POOL_MIN_SIZE must not exceed"):
        s.replace(pool_max=2)
    with pytest.raises(Exception, match="frozen"):
        s.pool_max = 9  # type: ignore[misc]


def test_secrets_never_show(caplog: pytest.LogCaptureFixture) -> None:
    s = from_env()
    shown = [repr(s), str(s), f"{s}", f"{s!r}", str(s.model_dump()), s.model_dump_json()]
    caplog.set_level(logging.INFO)
    logging.getLogger("gateway.test").info("settings: %s %r", s, s)
    shown += [caplog.text]
    for text in shown:
        assert SECRET not in text and "db-password-42" not in text, text
        assert "**********" in text
    assert s.jwt_secret.get_secret_value() == SECRET and s.database_url.get_secret_value() == URL
    # Nor in the message of a refusal, even when the secret itself is what is wrong.
    short = "short-secret-9876"
    message = refused("32 characters", BOOKING_ENV="production", JWT_SECRET=short)
    assert short not in message
    with pytest.raises(ConfigError) as info:
        Settings(database_url=123, jwt_secret=SECRET)
    assert SECRET not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__


def test_serving_settings() -> None:
    s = ServerSettings.from_env({"WEB_CONCURRENCY": "3"})
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 3)
    assert (s.max_header_bytes, s.header_timeout, s.keep_alive_timeout) == (16384, 10.0, 65)
    assert ServerSettings.from_env({}).workers >= 1
    for name, value in [("GATEWAY_PORT", "0"), ("GATEWAY_PORT", "http"), ("WEB_CONCURRENCY", "0"),
                        ("MAX_HEADER_BYTES", "10"), ("HEADER_TIMEOUT_SECONDS", "-1"),
                        ("KEEP_ALIVE_SECONDS", "0"), ("KEEP_ALIVE_SECONDS", "1.5")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            ServerSettings.from_env({name: value})
