"""bench/thinkload.c, the overload bench's load generator, against a real local HTTP server: it
compiles, keeps one connection per user, thinks between clicks, and counts every answer by status
with its latency. Needs a C compiler (`make bench` installs gcc); skipped without one."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "bench" / "thinkload.c"
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[tuple[str, str, int]] = []  # (path, authorization, client port)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.seen.append((self.path, self.headers.get("Authorization", ""), self.client_address[1]))
        status = 503 if len(Handler.seen) % 4 == 0 else 201  # every fourth answer "shed"
        payload = json.dumps({"echo": body.decode()}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("thinkload") / "thinkload"
    subprocess.run([str(CC), "-O2", "-Wall", "-Werror", "-o", str(out), str(SOURCE)], check=True)
    return str(out)


@pytest.fixture
def server() -> Any:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def run(binary: str, port: int, tmp_path: Path, users: int, think_ms: int) -> tuple[dict[str, Any], list[list[int]]]:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"user-{i} token-{i}\n" for i in range(3)))
    samples = tmp_path / "samples"
    done = subprocess.run(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-c", str(users), "-d", "2", "-t", str(think_ms),
         "-f", str(tokens), "-m", "POST", "-u", "/bookings/reserve", "-b", '{"quantity": 1}', "-o", str(samples)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, [[int(x) for x in line.split()] for line in samples.read_text().splitlines()]


def test_every_answer_is_counted_by_status_with_its_latency(binary: str, server: Any, tmp_path: Path) -> None:
    summary, samples = run(binary, server.server_address[1], tmp_path, users=5, think_ms=0)
    assert summary["errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    answered = len(Handler.seen)
    assert summary["requests"] == len(samples) > 20  # no think time: a closed loop as fast as the server
    assert answered - 5 <= summary["requests"] <= answered  # those in flight at the end are not counted
    statuses = summary["statuses"]
    assert set(statuses) == {"201", "503"} and statuses["201"] + statuses["503"] == len(samples)
    assert statuses["503"] == sum(1 for s in samples if s[0] == 503)
    assert summary["latency_us"]["503"]["n"] == statuses["503"]
    assert all(0 < us < 2_000_000 and 0 <= at < 2100 for _, us, at in samples)
    # One keep-alive connection per user, each user always with the same token (user i: token i mod 3).
    ports = {port for _, _, port in Handler.seen}
    assert len(ports) == 5
    by_port = {port: {auth for _, auth, p in Handler.seen if p == port} for port in ports}
    assert all(len(auths) == 1 for auths in by_port.values())
    assert {a for auths in by_port.values() for a in auths} == {f"Bearer token-{i}" for i in range(3)}
    assert {path for path, _, _ in Handler.seen} == {"/bookings/reserve"}


def test_users_think_between_clicks(binary: str, server: Any, tmp_path: Path) -> None:
    # Think uniform 0-400 ms (mean 200 ms) before every click, the first included: 10 users for
    # 2 s send about 10 x 2 / 0.2 = 100 requests, far from what the same users send without think.
    summary, samples = run(binary, server.server_address[1], tmp_path, users=10, think_ms=400)
    assert summary["errors"]["connect"] == summary["errors"]["read"] == 0
    assert 50 <= summary["requests"] <= 160
    # The first click comes after a think too (as wrk's delay()): not all 10 at the start.
    assert sum(1 for _, _, at in samples if at < 5) <= 3
