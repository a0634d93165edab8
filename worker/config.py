"""Worker settings, all from the environment (README lists them), validated like the gateway's.

`WorkerSettings.from_env()` reads the documented names; a wrong value raises ConfigError naming
the variable, so the worker does not start. Secrets (the database URL, SMTP_URL with its
password) are SecretStr: never in a repr, an error or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from gateway import netguard
from gateway.config import ConfigError, _env, _Settings

ROOT = Path(__file__).resolve().parent.parent
WORKER_ROLE = "booking_worker"
QUEUES = ("mail", "webhooks", "housekeeping", "payments")
DEFAULT_MAIL_FROM = "Booking <tickets@booking.localhost>"


def default_mail_dir() -> Path:
    """Where mails go without SMTP_URL: `<BOOKING_STATE_DIR or .local>/mail` (ignored by git)."""
    return Path(os.environ.get("BOOKING_STATE_DIR") or ROOT / ".local") / "mail"


def worker_url_from(owner_url: str) -> str:
    """The owner's connection with the worker's role, any password dropped (a pgpass file or
    WORKER_DATABASE_URL supplies it)."""
    params = conninfo_to_dict(owner_url)
    params.pop("password", None)
    params["user"] = WORKER_ROLE
    return make_conninfo("", **params)


# Values never echoed back in an error message (SMTP_URL may carry a password).
SECRET_FIELDS = frozenset({"database_url", "smtp_url"})


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable (and the value unless secret)."""
    names = WorkerSettings.env_names()
    by_alias = {alias: key for key, aliases in names.items() for alias in aliases}
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across fields: its message names the variables
            lines.append(message)
            continue
        key = by_alias.get(str(error["loc"][0]), str(error["loc"][0]))
        if error["type"] == "missing":
            message = "is not set (make run and make worker set it for the local database; or set DATABASE_URL)"
        elif key not in SECRET_FIELDS:
            message += f" (got {error.get('input')!r})"
        lines.append(f"{' / '.join(names.get(key, ())) or key}: {message}")
    return "invalid worker settings: " + "; ".join(lines)


@dataclass(frozen=True)
class SmtpServer:
    """SMTP_URL taken apart: `smtp://[user:pass@]host[:port]` (STARTTLS when offered) or
    `smtps://...` (TLS from the first byte)."""

    tls: bool  # smtps: implicit TLS
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. smtp://mail.example.com:587")
        try:
            port = parts.port or (465 if scheme == "smtps" else 25)
        except ValueError:
            raise ValueError("its port must be a number from 1 to 65535") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("takes no path or query: smtp[s]://[user:password@]host[:port]")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is not None and not user:
            raise ValueError("has a password but no user name")
        return cls(scheme == "smtps", parts.hostname, port, user, password)

    def describe(self) -> str:
        """For logs: no password."""
        who = f"{self.user}@" if self.user else ""
        return f"{'smtps' if self.tls else 'smtp'}://{who}{self.host}:{self.port}"


class WorkerSettings(_Settings):
    database_url: SecretStr = Field(validation_alias=_env("WORKER_DATABASE_URL"))
    smtp_url: SecretStr | None = Field(None, validation_alias=_env("SMTP_URL"))
    mail_from: str = Field(DEFAULT_MAIL_FROM, validation_alias=_env("MAIL_FROM"))
    mail_dir: Path = Field(default_factory=default_mail_dir, validation_alias=_env("MAIL_DIR"))
    webhook_allow_private: bool = Field(False, validation_alias=_env(netguard.ALLOW_PRIVATE_ENV))
    concurrency: int = Field(10, ge=1, le=200, validation_alias=_env("WORKER_CONCURRENCY"))
    queues: Annotated[tuple[str, ...], NoDecode] = Field(QUEUES, validation_alias=_env("WORKER_QUEUES"))
    mail_retry_base: float = Field(
        5.0, gt=0, le=3600, allow_inf_nan=False, validation_alias=_env("MAIL_RETRY_BASE_SECONDS")
    )
    # How long a mail is retried before its job fails for a DBA (24 h; webhooks: always 24 h, the contract).
    mail_retry_hours: float = Field(24.0, gt=0, le=720, allow_inf_nan=False, validation_alias=_env("MAIL_RETRY_HOURS"))
    webhook_retry_base: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False, validation_alias=_env("WEBHOOK_RETRY_BASE_SECONDS")
    )
    # One deadline for a whole webhook attempt (resolution, connect, answer): how long it may hold a worker slot.
    webhook_timeout: float = Field(
        10.0, gt=0, le=120, allow_inf_nan=False, validation_alias=_env("WEBHOOK_TIMEOUT_SECONDS")
    )
    # New jobs are not announced (migration 0010): an idle worker looks for due jobs this often.
    poll: float = Field(0.5, gt=0, le=60, allow_inf_nan=False, validation_alias=_env("WORKER_POLL_SECONDS"))
    heartbeat: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False, validation_alias=_env("WORKER_HEARTBEAT_SECONDS")
    )
    stalled: float = Field(30.0, gt=0, le=86400, allow_inf_nan=False, validation_alias=_env("WORKER_STALLED_SECONDS"))
    shutdown: float = Field(30.0, ge=0, le=3600, allow_inf_nan=False, validation_alias=_env("WORKER_SHUTDOWN_SECONDS"))

    def __init__(self, **values: Any) -> None:
        try:
            BaseSettings.__init__(self, **values)
        except ValidationError as exc:
            # `from None`: pydantic's error would repeat the input values, secrets included.
            raise ConfigError(describe(exc)) from None

    @field_validator("smtp_url", mode="after")
    @classmethod
    def _smtp(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SmtpServer.parse(value.get_secret_value())  # the message never repeats the URL
        return value

    @field_validator("mail_from")
    @classmethod
    def _from(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError('must be an e-mail address, e.g. "Booking <tickets@example.com>"')
        return value

    @field_validator("webhook_allow_private", mode="before")
    @classmethod
    def _allow_private(cls, value: Any) -> Any:
        return netguard.allow_private_setting(value)  # one rule for the gateway and the worker

    @field_validator("queues", mode="before")
    @classmethod
    def _queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = sorted(set(value) - set(QUEUES))
        if unknown or not value:
            raise ValueError(f"must be a comma-separated list of {', '.join(QUEUES)}")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        if self.stalled < 2 * self.heartbeat:
            raise ValueError(
                "WORKER_STALLED_SECONDS must be at least twice WORKER_HEARTBEAT_SECONDS "
                "(else a live worker's jobs would be taken as stalled)"
            )
        return self

    @property
    def smtp(self) -> SmtpServer | None:
        return SmtpServer.parse(self.smtp_url.get_secret_value()) if self.smtp_url else None

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.mail_from)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """WORKER_DATABASE_URL, else DATABASE_URL with the worker's role (no password)."""
        env = dict(os.environ if environ is None else environ)
        if not env.get("WORKER_DATABASE_URL") and env.get("DATABASE_URL"):
            try:
                env["WORKER_DATABASE_URL"] = worker_url_from(env["DATABASE_URL"])
            except Exception:  # psycopg's message would show the URL
                raise ConfigError("invalid worker settings: DATABASE_URL: is not a PostgreSQL URL") from None
        settings: WorkerSettings = super().from_env(env)
        return settings
