"""One webhook delivery attempt: check where it may go, POST the stored body, signed.

The address check is gateway/netguard.py's (the same rule the gateway applies when a webhook is
created), made again at every attempt on the addresses we are about to connect to, and the
request goes to that checked address itself (Host header and TLS server name set to the URL's
host), so a name that changes its answer after the check (DNS rebinding) reaches nothing new.
Proxies from the environment are ignored for the same reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway import netguard

TIMEOUT_SECONDS = 10.0
USER_AGENT = "booking-webhooks/1"


def signature(secret: str, body: bytes) -> str:
    """The X-Booking-Signature header: `sha256=` and the HMAC-SHA256 of the raw body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to; `outcome` is one of webhook_attempts' outcomes, RETRY meaning
    'failed, may be retried' (the task turns it into FAILED on the last run)."""

    outcome: str  # DELIVERED | RETRY | GONE | REFUSED
    status_code: int | None
    error: str | None
    duration_ms: int


def _host_for_url(ip: netguard.IPAddress) -> str:
    return f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)


def _host_header(target: netguard.Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


async def deliver(client: httpx.AsyncClient, delivery: dict[str, Any], allowed_private: bool) -> Attempt:
    """POST the delivery's body to its webhook's URL once. Never raises for the receiver's sake."""
    started = time.monotonic()

    def done(outcome: str, status: int | None = None, error: str | None = None) -> Attempt:
        return Attempt(outcome, status, error, int((time.monotonic() - started) * 1000))

    try:
        target = netguard.Target.parse(delivery["url"])
    except ValueError as exc:
        return done("REFUSED", error=str(exc))
    try:
        addresses = await netguard.checked_addresses(target, allowed_private, wait=5.0)
    except netguard.AddressRefused as exc:
        return done("REFUSED", error=f"address not allowed: {exc}")
    except OSError as exc:
        return done("RETRY", error=f"{target.host} does not resolve: {exc or type(exc).__name__}")

    body = delivery["body"].encode()
    headers = {
        "Host": _host_header(target),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Booking-Signature": signature(delivery["secret"], body),
        "X-Booking-Event": delivery["event_type"],
        "X-Booking-Delivery": str(delivery["id"]),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    error = "no address"
    for ip in addresses:  # the first that answers
        url = f"{target.scheme}://{_host_for_url(ip)}:{target.port}{target.path}"
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                request = client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)  # the body is not read
                await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ") if str(exc) else type(exc).__name__
            if isinstance(exc, TimeoutError):
                error = f"no answer within {TIMEOUT_SECONDS:g} s"
            continue
        status = response.status_code
        if 200 <= status < 300:
            return done("DELIVERED", status)
        if status == 410:
            return done("GONE", status, "the receiver answered 410 Gone")
        return done("RETRY", status, f"HTTP {status}")
    return done("RETRY", error=error)


def new_client() -> httpx.AsyncClient:
    """One client for the worker: no redirects followed, no proxies from the environment."""
    return httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(TIMEOUT_SECONDS),
        # No keep-alive: connections are keyed by the address, and one opened with one TLS server name
        # must not carry a request for another host on the same address.
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
    )  # fmt: skip
