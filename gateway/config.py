"""Gateway settings, all from the environment (README lists them), validated by pydantic-settings.

`Settings.from_env()` reads the variables by their documented names; a wrong value raises
ConfigError naming the variable, so the gateway does not start. `Settings(...)` with keyword
arguments (field names) reads nothing from the environment: tests build it that way.
Secrets are SecretStr: repr, str and logs show `**********`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from gateway import netguard


class ConfigError(RuntimeError):
    pass


ENVIRONMENTS = ("development", "production")
# Values never echoed back in an error message.
# The providers' credentials (API.md "Checkout with a payment provider"): field -> variable.
PAYMENT_SECRETS = {
    "momo_access_key": "MOMO_ACCESS_KEY",
    "momo_secret_key": "MOMO_SECRET_KEY",
    "zalopay_key1": "ZALOPAY_KEY1",
    "zalopay_key2": "ZALOPAY_KEY2",
    "bank_webhook_secret": "BANK_WEBHOOK_SECRET",
    "card_webhook_secret": "CARD_WEBHOOK_SECRET",
}
PAYMENT_IDS = {"momo_partner_code": "MOMO_PARTNER_CODE", "zalopay_app_id": "ZALOPAY_APP_ID"}
PROVIDER_URLS = {
    "momo_endpoint": "MOMO_ENDPOINT",
    "zalopay_endpoint": "ZALOPAY_ENDPOINT",
    "bank_api_url": "BANK_API_URL",
    "card_api_url": "CARD_API_URL",
}
URL_PATTERN = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"
SECRET_FIELDS = frozenset({"database_url", "database_read_url", "jwt_secret", "metrics_token", *PAYMENT_SECRETS})
HINTS = {
    "database_url": " (make run sets it for the local database)",
    "jwt_secret": " (make run generates one in .local/ for local use)",
}


class _FromMapping(EnvSettingsSource):
    """The environment source, reading a given mapping (os.environ by default), names exact."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._environ.items() if value != ""}


class _Settings(BaseSettings):
    """Shared base: exact names, frozen, unknown keyword arguments refused, errors as ConfigError."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # `from None`: the pydantic error would repeat the input values, secrets included.
            raise ConfigError(describe(type(self), exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # keyword arguments only; from_env() passes the environment in

    @classmethod
    def env_names(cls) -> dict[str, tuple[str, ...]]:
        """field name -> the environment variable(s) it is read from (first one set wins)."""
        names: dict[str, tuple[str, ...]] = {}
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, str):
                names[field] = (alias,)
            elif isinstance(alias, AliasChoices):
                names[field] = tuple(str(choice) for choice in alias.choices)
        return names

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Any:
        values = _FromMapping(cls, os.environ if environ is None else environ)()
        known = {name for names in cls.env_names().values() for name in names}
        return cls(**{key: value for key, value in values.items() if key in known})


def describe(cls: type[_Settings], exc: ValidationError) -> str:
    """One line per problem, naming the environment variable (and the value unless secret)."""
    names = cls.env_names()
    by_alias = {alias: field for field, aliases in names.items() for alias in aliases}
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across fields: its message names the variables
            lines.append(message)
            continue
        key = str(error["loc"][0])
        field = by_alias.get(key, key)
        if error["type"] == "missing":
            message = "is not set" + HINTS.get(field, "")
        elif field not in SECRET_FIELDS:
            message += f" (got {error.get('input')!r})"
        lines.append(f"{' / '.join(names.get(field, ())) or field}: {message}")
    return "invalid gateway settings: " + "; ".join(lines)


def _env(*names: str) -> Any:
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(_Settings):
    database_url: SecretStr = Field(validation_alias=_env("GATEWAY_DATABASE_URL", "DATABASE_URL"))
    # Catalogue reads (the event list and one event: gateway/db.py ReadRouter) go to a second pool on
    # this connection when set, typically a standby first with the primary after it and
    # target_session_attrs=prefer-standby; unset: everything on database_url, as without a replica.
    database_read_url: SecretStr | None = Field(
        None, validation_alias=_env("GATEWAY_DATABASE_READ_URL", "DATABASE_READ_URL")
    )
    read_pool_max: int = Field(10, ge=1, le=1000, validation_alias=_env("GATEWAY_READ_POOL_MAX"))
    jwt_secret: SecretStr = Field(min_length=1, validation_alias=_env("JWT_SECRET"))
    production: bool = Field(False, validation_alias=_env("BOOKING_ENV"))
    # Access tokens: short, since only revocation (the deny-list, kept 24 h) can take one back.
    token_ttl: int = Field(900, gt=0, le=86400, validation_alias=_env("JWT_TTL_SECONDS"))
    # Sessions: a refresh token unused this long expires; a session ends this long after login;
    # a spent refresh token presented again within the grace gets another pair (two tabs).
    refresh_ttl: int = Field(1209600, gt=0, le=31536000, validation_alias=_env("REFRESH_TTL_SECONDS"))
    session_ttl: int = Field(2592000, gt=0, le=31536000, validation_alias=_env("SESSION_TTL_SECONDS"))
    refresh_grace: int = Field(10, ge=0, le=300, validation_alias=_env("REFRESH_REUSE_GRACE_SECONDS"))
    pool_min: int = Field(5, ge=0, validation_alias=_env("POOL_MIN_SIZE"))
    pool_max: int = Field(20, ge=1, validation_alias=_env("POOL_MAX_SIZE"))
    pool_timeout: float = Field(2.0, gt=0, allow_inf_nan=False, validation_alias=_env("POOL_TIMEOUT_SECONDS"))
    pool_max_idle: float = Field(30.0, gt=0, allow_inf_nan=False, validation_alias=_env("POOL_MAX_IDLE_SECONDS"))
    cache_ttl: float = Field(300.0, ge=0, allow_inf_nan=False, validation_alias=_env("EVENTS_CACHE_TTL_SECONDS"))
    cache_sweep: float = Field(3600.0, gt=0, allow_inf_nan=False, validation_alias=_env("EVENTS_CACHE_SWEEP_SECONDS"))
    cache_max_entries: int = Field(1000, ge=1)
    reserve_strategy: Literal["pessimistic", "optimistic"] = Field(
        "pessimistic", validation_alias=_env("RESERVE_STRATEGY")
    )
    # pydantic's bool: on/off, true/false, yes/no, 1/0 (any case); anything else is refused.
    reserve_coalesce: bool = Field(True, validation_alias=_env("RESERVE_COALESCE"))
    # api.reserve_tickets_batch refuses more than 1000 requests per call.
    reserve_batch_max: int = Field(50, ge=1, le=1000, validation_alias=_env("RESERVE_BATCH_MAX"))
    # Concurrent joins of one event's waiting room share one call (gateway/onsale/join.py);
    # api.join_waiting_room_batch refuses more than 1000 users per call.
    join_batch_max: int = Field(200, ge=1, le=1000, validation_alias=_env("JOIN_BATCH_MAX"))
    max_body_bytes: int = Field(65536, ge=1, validation_alias=_env("MAX_BODY_BYTES"))
    hash_concurrency: int = Field(4, ge=1)
    # Rate limits (gateway/ratelimit.py): on|off (pydantic's bool), and the proxies whose
    # X-Forwarded-For is believed (comma-separated CIDRs; empty: none).
    rate_limits: bool = Field(True, validation_alias=_env("RATE_LIMITS"))
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        (), validation_alias=_env("TRUSTED_PROXIES")
    )
    # Load shedding (gateway/shedding.py, refused in gateway/serving.py's protocol). A hard cap of
    # requests in flight per process; past it 503 busy at once. 0: no shedding at all. 1000, not
    # lower: the standing-queue test below is what normally sheds; a count low enough to bound the
    # wait (Little: 200 at ~1,500 req/s is ~130 ms) also refused 1000 users clicking without pause
    # who were served in ~250 ms, and they came straight back: 22,000 refusals/s, goodput 1,700/s.
    max_in_flight: int = Field(1000, ge=0, le=100000, validation_alias=_env("MAX_IN_FLIGHT"))
    # Refuse for the next 100 ms whenever, in the last 100 ms, even the quickest request took
    # longer than this (a standing queue: CoDel's test; a burst that drains is not refused).
    # Measured (issue 10, 10,000 users thinking 0-2 s, bench/thinkload.c): 250 let ~900 requests
    # queue in each process, and a request refused then had waited its turn in a loop that long:
    # shed p99 88-120 ms; 150: 18 ms, served p99 250 ms, goodput unchanged (83-84%). 100: shed p99
    # 17 ms but more refused in the crowd. 0: no such test.
    shed_target_ms: float = Field(150, ge=0, le=60000, allow_inf_nan=False, validation_alias=_env("SHED_TARGET_MS"))
    # Refuse too while the event loop runs more than this late (sampled every 20 ms). 0: off, the
    # default: with the garbage collector tuned (GATEWAY_GC_GEN0) the standing-queue test sufficed.
    shed_loop_lag_ms: float = Field(0, ge=0, le=10000, allow_inf_nan=False, validation_alias=_env("SHED_LOOP_LAG_MS"))
    # A client that asks again at once after a refusal (within 50 ms plus the loop's lag,
    # gateway/serving.py QUICK_COMEBACK) is refused and its connection not read for this long (Retry-After says 1 s):
    # it waits in its socket buffer instead of costing another refusal.
    # Measured: 1000 users clicking without pause, refused when the machine stalled, came straight
    # back: 1,180-25,600 refusals/s and served down to 1,183/s; with 250 ms, 48-172 refusals/s.
    # Short, so a user who does wait less than Retry-After is not held long. 0: off.
    shed_pause_ms: float = Field(250, ge=0, le=10000, allow_inf_nan=False, validation_alias=_env("SHED_PAUSE_MS"))
    # At most this many rate-limit checks per database call (api.check_rate_limits takes 1000).
    rate_limit_batch_max: int = Field(200, ge=1, le=1000)
    # Webhook URLs may point at loopback, private and link-local addresses (tests, local
    # development). Read by gateway/netguard.py's rule, the same one the worker applies.
    webhook_allow_private: bool = Field(False, validation_alias=_env(netguard.ALLOW_PRIVATE_ENV))
    # GET /metrics asks for `Authorization: Bearer <this>` when set; unset: open (gateway/metrics.py).
    metrics_token: SecretStr | None = Field(None, min_length=16, validation_alias=_env("METRICS_TOKEN"))
    # Payments (issue 12; the mode itself lives in the database, payment_settings: `make run`
    # applies PAYMENT_MODE there, the gateway reads it here for its sandbox and production rules).
    # instant: `complete` pays at once (demos, the seed's tests); provider: checkout and callbacks.
    payment_mode: Literal["instant", "provider"] = Field("instant", validation_alias=_env("PAYMENT_MODE"))
    # Production refuses instant payments (anyone could mark seats paid) unless this says yes.
    allow_instant_payments: bool = Field(False, validation_alias=_env("ALLOW_INSTANT_PAYMENTS"))
    # The development payment sandbox (gateway/payments/sandbox.py: the page that signs callbacks
    # with our own keys, and the stub provider APIs): only when asked for (`make run` asks in
    # development), never in production (refused), and only in provider mode.
    payment_sandbox: bool = Field(False, validation_alias=_env("PAYMENT_SANDBOX"))
    # How the outside world reaches this gateway (pay_url, the providers' notify/return URLs);
    # unset: the request's own scheme and host. The sandbox's self-callback never uses it (nor the
    # Host header): it goes to the address this server listens on.
    public_base_url: str | None = Field(None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
                                        validation_alias=_env("PUBLIC_BASE_URL"))  # fmt: skip
    # The providers' credentials; empty: that provider's callbacks are refused (never verified
    # under an empty key). `make run` generates development ones in .local/.
    momo_partner_code: str = Field("", max_length=64, validation_alias=_env("MOMO_PARTNER_CODE"))
    momo_access_key: SecretStr = Field(SecretStr(""), validation_alias=_env("MOMO_ACCESS_KEY"))
    momo_secret_key: SecretStr = Field(SecretStr(""), validation_alias=_env("MOMO_SECRET_KEY"))
    zalopay_app_id: str = Field("", max_length=64, validation_alias=_env("ZALOPAY_APP_ID"))
    zalopay_key1: SecretStr = Field(SecretStr(""), validation_alias=_env("ZALOPAY_KEY1"))
    zalopay_key2: SecretStr = Field(SecretStr(""), validation_alias=_env("ZALOPAY_KEY2"))
    bank_webhook_secret: SecretStr = Field(SecretStr(""), validation_alias=_env("BANK_WEBHOOK_SECRET"))
    card_webhook_secret: SecretStr = Field(SecretStr(""), validation_alias=_env("CARD_WEBHOOK_SECRET"))
    # The providers' APIs (gateway/payments/providers.py; the worker reads the same variables).
    # Unset: with the sandbox on, this gateway's stub APIs; otherwise MoMo and ZaloPay default to
    # their test hosts in development and their production hosts in production, and the bank's and
    # card processor's have no default (provider mode without the sandbox requires them).
    momo_endpoint: str | None = Field(None, pattern=URL_PATTERN, validation_alias=_env("MOMO_ENDPOINT"))
    zalopay_endpoint: str | None = Field(None, pattern=URL_PATTERN, validation_alias=_env("ZALOPAY_ENDPOINT"))
    bank_api_url: str | None = Field(None, pattern=URL_PATTERN, validation_alias=_env("BANK_API_URL"))
    card_api_url: str | None = Field(None, pattern=URL_PATTERN, validation_alias=_env("CARD_API_URL"))
    # Seconds per provider request (connect, read, write each); MoMo's query and refund wait at
    # least 30 s, as MoMo asks (the worker's calls; the checkout's create keeps this value).
    payment_provider_timeout: float = Field(10.0, gt=0, le=120, allow_inf_nan=False,
                                            validation_alias=_env("PAYMENT_PROVIDER_TIMEOUT"))  # fmt: skip
    # Where the development sandbox keeps what its stub providers know (every uvicorn worker
    # shares it); unset: a folder in the system's temporary directory. `make run`: .local/sandbox.
    payment_sandbox_dir: str | None = Field(None, min_length=1, validation_alias=_env("PAYMENT_SANDBOX_DIR"))

    @field_validator("database_read_url")
    @classmethod
    def _conninfo(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                conninfo_to_dict(value.get_secret_value())
            except ProgrammingError:  # its message would repeat the value (a password in it)
                raise ValueError("is not a libpq connection string or postgresql:// URL") from None
        return value

    @field_validator("webhook_allow_private", mode="before")
    @classmethod
    def _allow_private(cls, value: Any) -> Any:
        return netguard.allow_private_setting(value)  # one rule for the gateway and the worker

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(ip_network(v, strict=False) if not isinstance(v, IPv4Network | IPv6Network) else v
                         for v in value)  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be comma-separated IP addresses or CIDRs, e.g. 10.0.0.0/8,::1 ({exc})") from None

    @field_validator("production", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        if isinstance(value, str):  # from BOOKING_ENV: a name, not a boolean
            if value not in ENVIRONMENTS:
                raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}")
            return value == "production"
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.pool_min > self.pool_max:
            raise ValueError("POOL_MIN_SIZE must not exceed POOL_MAX_SIZE")
        if self.production and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters in production (BOOKING_ENV=production)")
        if self.production and self.payment_mode == "instant" and not self.allow_instant_payments:
            raise ValueError(
                "PAYMENT_MODE=instant marks orders paid without a payment: refused in production "
                "(BOOKING_ENV=production); set PAYMENT_MODE=provider, or ALLOW_INSTANT_PAYMENTS=yes for a demo"
            )
        if self.production and self.payment_sandbox:
            raise ValueError(
                "PAYMENT_SANDBOX=yes signs payments with the gateway's own keys: refused in production "
                "(BOOKING_ENV=production); unset it"
            )
        if self.production and self.payment_mode == "provider":
            unset = [name for field, name in {**PAYMENT_IDS, **PAYMENT_SECRETS}.items() if not self.secret(field)]
            unset += self._unset_api_urls()
            if unset:
                raise ValueError(f"PAYMENT_MODE=provider in production needs {', '.join(unset)} (not set)")
        elif self.payment_mode == "provider" and not self.sandbox and (unset := self._unset_api_urls()):
            raise ValueError(f"PAYMENT_MODE=provider without the sandbox needs {', '.join(unset)} (not set; "
                             "no default), or PAYMENT_SANDBOX=yes in development")  # fmt: skip
        return self

    def _unset_api_urls(self) -> list[str]:
        """What a gateway creating payments at real providers needs and has no default for:
        PUBLIC_BASE_URL (the callback and return URLs the providers are given; never built from a
        request's Host header, which the client chooses), the bank's and card processor's APIs."""
        return [name for name, value in (("PUBLIC_BASE_URL", self.public_base_url),
                                         ("BANK_API_URL", self.bank_api_url),
                                         ("CARD_API_URL", self.card_api_url)) if not value]  # fmt: skip

    def secret(self, field: str) -> str:
        """A payment credential's value by field name ("" when unset)."""
        value = getattr(self, field)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def provider_env(self) -> dict[str, str]:
        """The provider variables as the environment would hold them (for ProviderConfig.from_env,
        which applies the defaults: one rule for the gateway and the worker)."""
        env = {"BOOKING_ENV": "production" if self.production else "development",
               "PAYMENT_MODE": self.payment_mode, "PAYMENT_SANDBOX": "yes" if self.sandbox else "no",
               "PAYMENT_PROVIDER_TIMEOUT": repr(self.payment_provider_timeout)}  # fmt: skip
        if self.public_base_url:
            env["PUBLIC_BASE_URL"] = self.public_base_url
        for field, name in {**PAYMENT_IDS, **PAYMENT_SECRETS}.items():
            env[name] = self.secret(field)
        for field, name in PROVIDER_URLS.items():
            value = getattr(self, field)
            if value:
                env[name] = value
        return env

    @property
    def sandbox_dir(self) -> str:
        """PAYMENT_SANDBOX_DIR, else one folder per OS user in the temporary directory."""
        return self.payment_sandbox_dir or os.path.join(tempfile.gettempdir(), f"booking-sandbox-{os.getuid()}")

    @property
    def sandbox(self) -> bool:
        """The payment sandbox routes exist: PAYMENT_SANDBOX=yes, provider mode, not production."""
        return self.payment_sandbox and self.payment_mode == "provider" and not self.production

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated again (model_copy would not validate)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **changes})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        settings: Settings = super().from_env(environ)
        return settings


def settings_or_exit() -> Settings:
    """Settings.from_env(), or one log line saying which variable is wrong and exit status 1
    (uvicorn would print a traceback for an exception from the app factory)."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        logging.getLogger("gateway.config").critical("%s", exc)
        raise SystemExit(1) from None


class ServerSettings(_Settings):
    """How `make run` serves (uvicorn and the HTTP protocol class in gateway/serving.py)."""

    host: str = Field("127.0.0.1", min_length=1, validation_alias=_env("GATEWAY_HOST"))
    port: int = Field(8000, ge=1, le=65535, validation_alias=_env("GATEWAY_PORT"))
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, validation_alias=_env("WEB_CONCURRENCY"))
    # Request line plus headers; a bearer token is under 1 KiB. Larger heads get 431.
    max_header_bytes: int = Field(16384, ge=1024, le=1048576, validation_alias=_env("MAX_HEADER_BYTES"))
    # From a connection's first byte (or its opening) to the end of the request head.
    header_timeout: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False, validation_alias=_env("HEADER_TIMEOUT_SECONDS")
    )
    # Idle keep-alive connections (and new ones that sent nothing) are closed after this
    # (uvicorn --timeout-keep-alive). Longer than a fan thinks between clicks, so the crowd keeps
    # its connections (issue 10: 5 s dropped half of them, ~11,000 read errors in 20 s), and longer
    # than the 60 s idle timeout of common load balancers, so the proxy, not us, closes first.
    keep_alive_timeout: int = Field(65, ge=1, le=3600, validation_alias=_env("KEEP_ALIVE_SECONDS"))

    # listen(2) backlog: connections the kernel completes and holds until a worker accepts them.
    # uvicorn's default, 2048, is below an onsale's burst of connects; the kernel caps it at
    # net.core.somaxconn (65535 here; 4096 by default since Linux 5.4).
    backlog: int = Field(16384, ge=1, le=65535, validation_alias=_env("GATEWAY_BACKLOG"))

    # The event loop (uvicorn --loop). asyncio, not uvloop: under load uvloop left connections
    # unaccepted for seconds (issue 10: 1000 connections on /healthz, p99 7.1 s, 258 still in the
    # accept queue 5 s in; asyncio: p99 119 ms, all accepted, split 509/491), for ~12% less throughput.
    loop: Literal["asyncio", "uvloop"] = Field("asyncio", validation_alias=_env("GATEWAY_LOOP"))

    # Python's garbage collector (gateway/serving.py tune_gc): the objects of the loaded app frozen
    # out of every collection, the young generation collected every this many allocations (Python:
    # 700), its elders 10x less often. With thousands of connections and requests alive, Python's
    # defaults stop the loop for tens of ms many times a second (issue 10: loop lag p99 160 ms at
    # 1000 connections; 40 ms so). Above what the requests in flight keep alive (up to MAX_IN_FLIGHT
    # x ~50 objects): at 50000, 10,000 users thinking 0-2 s kept ~45,000 young objects alive, so
    # every collection walked them all, found nothing (collected 0) and stopped the loop 20-150 ms;
    # 200000: shed p99 23 ms (was 120-260), served p99 287 ms. 0: Python's defaults.
    gc_gen0_threshold: int = Field(200_000, ge=0, le=10_000_000, validation_alias=_env("GATEWAY_GC_GEN0"))

    # Connections a worker accepts each time the shared listening socket is ready (gateway/serving.py
    # GatewayLoop; asyncio's own batch is the whole backlog, so one worker took most of a burst).
    accept_batch: int = Field(16, ge=1, le=65535, validation_alias=_env("GATEWAY_ACCEPT_BATCH"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        settings: ServerSettings = super().from_env(environ)
        return settings
