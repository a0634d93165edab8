"""Where outgoing webhook requests may go: public addresses only, unless WEBHOOK_ALLOW_PRIVATE=yes.

A webhook URL is chosen by an admin, but the request is made from inside the house: without
this check a URL could reach the database's host, the cloud metadata service (169.254.169.254)
or anything else on the private network (SSRF). Refused: loopback, private (RFC 1918, ULA),
link-local, multicast, reserved, unspecified, carrier-grade NAT, and IPv6 forms that embed a
refused IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64 well-known prefix).

The gateway checks when a webhook is created (a clear 422 `url_not_allowed` for a literal
address or a name that resolves to one); the worker checks again at every delivery, on the
addresses it is about to connect to, and connects to the checked address itself, so a name that
changes its answer between the check and the connection (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_ENV = "WEBHOOK_ALLOW_PRIVATE"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def allow_private(env: Mapping[str, str] | None = None) -> bool:
    """WEBHOOK_ALLOW_PRIVATE: yes/true/1 lets webhooks reach private and loopback addresses
    (tests and local development); anything else, or unset, refuses them."""
    value = (os.environ if env is None else env).get(ALLOW_PRIVATE_ENV, "").strip().lower()
    if value in ("", "no", "false", "0", "off"):
        return False
    if value in ("yes", "true", "1", "on"):
        return True
    raise ValueError(f"{ALLOW_PRIVATE_ENV} must be yes or no, not {value!r}")


def refusal(ip: IPAddress) -> str | None:
    """Why webhooks may not reach `ip` (None when they may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} (inside {ip})" if reason else None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return f"{ip} is a shared (carrier-grade NAT) address"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return f"{ip} is a private or reserved address"
    return None


@dataclass(frozen=True)
class Target:
    """A webhook URL split for connecting: scheme, host as written, port, and the path."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # an unbalanced "[" in the host
            raise ValueError(f"a webhook URL must be well formed: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError("a webhook URL must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("a webhook URL needs a host")
        if "@" in parts.netloc:  # "http://@host/" too: urlsplit gives an empty user name, not None
            raise ValueError("a webhook URL may not carry a user name or password")
        try:
            port = parts.port
        except ValueError:  # not a number, or out of range
            port = 0
        if port == 0:  # urlsplit takes 0 (it is no port to connect to)
            raise ValueError("the port of the webhook URL is not a number from 1 to 65535")
        port = port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        target = cls(scheme, parts.hostname, port, path)
        if target.literal_ip() is None:
            try:  # what getaddrinfo does with a name: an empty or over-long label raised UnicodeError there
                parts.hostname.encode("idna")
            except UnicodeError as exc:
                raise ValueError("the host name of the webhook URL is not valid (empty or over-long label)") from exc
        return target

    def literal_ip(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


async def resolve(target: Target, wait: float = 5.0) -> list[IPAddress]:
    """The addresses `target.host` has now (a literal address is its own answer).
    Raises OSError (socket.gaierror, TimeoutError) when the name does not resolve within `wait` seconds."""
    literal = target.literal_ip()
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
        wait,
    )
    seen: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check(addresses: list[IPAddress], allowed_private: bool) -> None:
    """Raise AddressRefused if any address is refused (one bad answer refuses the name: a
    client might connect to any of them)."""
    if allowed_private:
        return
    for ip in addresses:
        reason = refusal(ip)
        if reason:
            raise AddressRefused(reason)


async def checked_addresses(target: Target, allowed_private: bool, wait: float = 5.0) -> list[IPAddress]:
    """Resolve and check: the addresses to connect to. Raises AddressRefused or OSError."""
    addresses = await resolve(target, wait)
    check(addresses, allowed_private)
    return addresses
