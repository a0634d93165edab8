"""`make run`'s children: the gateway (uvicorn) and a job worker, started and stopped together.

Each child gets PR_SET_PDEATHSIG (SIGTERM when this process dies, even by kill -9), so neither
outlives `make run`. Each runs in its own process group: Ctrl-C in the terminal reaches this
process only, which passes SIGINT/SIGTERM on once to every child (a child getting the terminal's
signal AND ours would take the second as "stop now", cutting the worker's graceful shutdown).
When one child exits, the other is stopped; the exit status is that child's (0 after a clean
stop on request).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    stop_timeout: float  # after SIGTERM, how long before SIGKILL
    proc: subprocess.Popen[bytes] | None = None


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:  # in the child, between fork and exec
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _shell(status: int) -> int:
    """A Popen return code as a shell exit status (killed by signal N: 128 + N)."""
    return 128 - status if status < 0 else status


def supervise(children: list[Child]) -> int:
    """Start every child, forward SIGINT/SIGTERM, stop the rest when one exits. The status: 0
    after a stop on request (uvicorn re-raises the signal it got: that counts as clean), else
    the status of the child that exited first."""
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            if stopping:
                break
            child.proc = subprocess.Popen(
                list(child.args), env=dict(child.env), process_group=0, preexec_fn=_die_with_parent(os.getpid())
            )
        first: Child | None = None
        while first is None:
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    first = child
                    break
            else:
                if stopping and all(c.proc is None for c in children):
                    return 128 + stopping[0]
                time.sleep(0.1)
        assert first.proc is not None
        by_signal = stopping[0] if stopping else 0
        if not stopping:
            print(f"dbctl run: the {first.name} exited ({first.proc.returncode}); stopping the rest.", file=sys.stderr)
            stopping.append(signal.SIGTERM)
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=child.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"dbctl run: the {child.name} did not stop in {child.stop_timeout:g} s: killed.", file=sys.stderr)
                child.proc.kill()
                child.proc.wait()
        if by_signal:  # stopped on request: clean unless a child failed otherwise
            statuses = [c.proc.returncode for c in children if c.proc is not None]
            return next((_shell(s) for s in statuses if s not in (0, -by_signal, 128 + by_signal)), 0)
        return _shell(first.proc.returncode)
    finally:
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
