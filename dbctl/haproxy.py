"""`make lb`: N single-worker gateways on consecutive ports behind HAProxy, on one machine.

The config is ops/haproxy/haproxy.cfg; HAProxy substitutes its "${VAR}"s itself (set here in its
environment) and its "# @GATEWAYS@" line becomes one `server` line per gateway. HAProxy connects
to the gateways from HAPROXY_SOURCE (127.0.0.2 by default: its own loopback address), which the
gateways' TRUSTED_PROXIES names alone, so a client on 127.0.0.1 cannot pass itself off as the proxy.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from gateway.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATE = ROOT / "ops" / "haproxy" / "haproxy.cfg"
MARKER = "# @GATEWAYS@"
# Debian's package ships it in /usr/sbin, outside a non-root user's PATH.
BINARY_PLACES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


@dataclass(frozen=True)
class Layout:
    port: int  # the frontend
    stats_port: int
    gateway_ports: tuple[int, ...]
    host: str = "127.0.0.1"
    source: str = "127.0.0.2"  # HAProxy's address towards the gateways

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Layout:
        def number(name: str, default: int, low: int, high: int) -> int:
            raw = env.get(name, "").strip() or str(default)
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high} (got {value})")
            return value

        port = number("HAPROXY_PORT", 8000, 1, 65535)
        count = number("GATEWAY_INSTANCES", 2, 1, 64)
        first = number("GATEWAY_FIRST_PORT", port + 1, 1, 65535 - count + 1)
        stats = number("HAPROXY_STATS_PORT", 8404, 1, 65535)
        source = env.get("HAPROXY_SOURCE", "").strip() or "127.0.0.2"
        try:
            ip_address(source)
        except ValueError:
            raise ConfigError(f"HAPROXY_SOURCE must be an IP address (got {source!r})") from None
        ports = tuple(range(first, first + count))
        if port in ports or stats in ports or stats == port:
            raise ConfigError("HAPROXY_PORT, HAPROXY_STATS_PORT and the gateways' ports must differ")
        return cls(port=port, stats_port=stats, gateway_ports=ports, source=source)


def render(gateway_ports: Sequence[int], host: str = "127.0.0.1", template: Path = CONFIG_TEMPLATE) -> str:
    """The config with one `server gwN host:port` line per gateway in place of the marker."""
    text = template.read_text()
    if text.count(MARKER) != 1:
        raise ConfigError(f"{template} must hold the line {MARKER!r} once")
    lines = "\n    ".join(f"server gw{n} {host}:{p}" for n, p in enumerate(gateway_ports, 1))
    return text.replace(MARKER, lines)


def haproxy_env(layout: Layout, base: Mapping[str, str]) -> dict[str, str]:
    return {
        **base,
        "HAPROXY_BIND": f"{layout.host}:{layout.port}",
        "HAPROXY_STATS_BIND": f"{layout.host}:{layout.stats_port}",
        "HAPROXY_SOURCE": layout.source,
    }


def require_binary() -> str:
    found = shutil.which("haproxy") or next((p for p in BINARY_PLACES if os.access(p, os.X_OK)), None)
    if found is None:
        raise ConfigError("haproxy is not installed: scripts/install-system-deps haproxy (make lb does it)")
    return found


def haproxy_command(binary: str, config: Path) -> list[str]:
    # -db: in the foreground, no daemon (stopped with its supervisor); -W not needed: no reloads.
    return [binary, "-db", "-f", str(config)]


def gateway_env(base: Mapping[str, str], layout: Layout, port: int, metrics_dir: Path) -> dict[str, str]:
    """One instance: one uvicorn worker on its port, its own metrics folder, believing the
    X-Forwarded-For of HAProxy's address only (unless TRUSTED_PROXIES says otherwise)."""
    env = dict(base)
    env.update({"GATEWAY_HOST": layout.host, "GATEWAY_PORT": str(port), "WEB_CONCURRENCY": "1",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})  # fmt: skip
    if not env.get("TRUSTED_PROXIES", "").strip():
        env["TRUSTED_PROXIES"] = layout.source
    return env


def run() -> None:
    """`python -m dbctl lb`: the database up, N gateways, HAProxy and (unless RUN_WORKER=no) a job
    worker, all supervised (dbctl/supervise.py): Ctrl-C stops them all."""
    from dbctl import __main__ as main
    from dbctl import local
    from dbctl.supervise import Child, supervise
    from worker.config import WorkerSettings

    try:
        layout = Layout.from_env(os.environ)
        binary = require_binary()
    except ConfigError as exc:
        sys.exit(str(exc))
    t = main.up()
    base = main.gateway_env(t)
    state = local.state_dir().resolve()
    children: list[Child] = []
    try:
        for n, port in enumerate(layout.gateway_ports, 1):
            metrics_dir = state / "metrics" / f"gw{n}"
            env = gateway_env(base, layout, port, metrics_dir)
            args = main.uvicorn_args(env)
            main.fresh_metrics_dir(str(metrics_dir))
            children.append(Child(f"gateway gw{n}", args, env, stop_timeout=20))
        config = state / "haproxy.cfg"
        config.write_text(render(layout.gateway_ports, layout.host))
        children.append(Child("haproxy", haproxy_command(binary, config), haproxy_env(layout, os.environ), 10))
        if main.run_worker_wanted(os.environ):
            wenv = main.worker_env(t)
            worker = WorkerSettings.from_env(wenv)
            children.append(Child("worker", main.WORKER_ARGS, wenv, stop_timeout=worker.shutdown + 10))
    except ConfigError as exc:
        sys.exit(str(exc))
    ports = ", ".join(str(p) for p in layout.gateway_ports)
    print(f"HAProxy on http://{layout.host}:{layout.port} (stats http://{layout.host}:{layout.stats_port}/) "
          f"over {len(layout.gateway_ports)} gateway(s) on ports {ports}; "
          "Ctrl-C stops all, `make stop` the database.")  # fmt: skip
    sys.stdout.flush()
    sys.exit(supervise(children))
