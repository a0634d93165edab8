"""A real headless Chromium (Debian package `chromium`) driven over the DevTools protocol through
a pipe (--remote-debugging-pipe: JSON messages ending in NUL on file descriptors 3 and 4), so no
port, no websocket library and no webdriver are needed.

`make test` installs chromium (scripts/install-system-deps chromium). Without it the browser
tests fail, saying so; BOOKING_SKIP_BROWSER_TESTS=1 skips them explicitly (never silently).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("BOOKING_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("BOOKING_SKIP_BROWSER_TESTS=1 and no chromium")
    pytest.fail("chromium is not installed: `make test` installs it (scripts/install-system-deps chromium)")


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="booking-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends above 9 (bash takes such numbers), so that moving them to 3 and 4 cannot
        # overwrite one another.
        to_browser_r, from_browser_w = (_above_9(fd) for fd in (to_browser_r, from_browser_w))
        args = [
            chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank",
        ]  # fmt: skip
        # The browser reads commands on fd 3 and writes answers on fd 4.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if os.environ.get("BOOKING_BROWSER_DEBUG") else subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """One DevTools command; returns its result (events on the way are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    result: dict[str, Any] = answer.get("result", {})
                    return result
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"chromium did not answer {method}")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk

    def open(self, url: str) -> Tab:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Tab(self, session)

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        try:
            self.process.wait(timeout=10)  # it exits when its pipe closes
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class Tab:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.browser.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, self.session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, within: float, describe: Callable[[], Any] | None = None) -> Any:
        """Polls until the expression is truthy; returns its value."""
        deadline = time.monotonic() + within
        while True:
            try:
                value = self.eval(expression)
            except RuntimeError:  # the page is still loading
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                page = describe() if describe else ""
                raise AssertionError(f"not true within {within} s: {expression}; page: {page}")
            time.sleep(0.1)
