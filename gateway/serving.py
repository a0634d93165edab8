"""The HTTP/1.1 protocol `make run` serves with: uvicorn's httptools protocol plus the two limits
uvicorn does not set for it (issue 8: a 1 MB header was accepted, and 200 connections each
holding 1 MB of unfinished header grew a worker from 68 to 224 MB).

- The request head (request line and headers) may be at most MAX_HEADER_BYTES; past that the
  client gets 431 and the connection is closed. (uvicorn bounds this only for its h11 protocol,
  `--h11-max-incomplete-event-size`; httptools/llhttp buffers any length.) Bytes are counted
  as they arrive, before the parser sees them, so a worker holds at most the limit per
  connection (plus the socket read in hand).
- The head must be complete within HEADER_TIMEOUT_SECONDS of its first byte (uvicorn's keep-alive
  timer stops at the first byte, so a client trickling a header could hold a connection for
  ever); otherwise 408 and close.
- A new connection that sends nothing is closed after KEEP_ALIVE_SECONDS, as an idle keep-alive
  one is (issue 10: it was HEADER_TIMEOUT_SECONDS from the opening, so a user who opened a
  connection and thought for 10 s before the first click was cut off: wrk counted read errors).

- Load shedding (gateway/shedding.py): when the process is past its bound, a request that is not
  exempt is answered 503 `busy` right here, once its head is parsed: prebuilt bytes written to
  the socket, its body (if any) read and dropped, the connection kept alive; no ASGI cycle, no
  task. Admitted requests are counted in flight from their task's start to its end.
- One write per response: uvicorn writes a response's head and its body in two
  `transport.write` calls, two send() system calls and two TCP segments, waking the client
  twice. `OneWrite` holds the head until the first body part and writes both at once (the same
  bytes on the wire). Measured (docs/I10-PERF-NOTES.md): ~40% less kernel time per request, the
  live event page's throughput ~2x at 64 connections.
- One read buffer per process: the protocol is an asyncio BufferedProtocol, so the transport
  reads each connection with recv_into() into one shared 256 KiB buffer and the parser gets a
  copy of just the bytes read. For a plain Protocol asyncio calls recv(262144): a new 256 KiB
  bytes object per read, shrunk in place to the few hundred bytes that arrived. That large
  malloc and realloc on every request fragmented the C heap, whose free space grew without
  bound: the 10-minute soak's workers +13% RSS (85 -> 96 MB, ~45 bytes a request) while their
  live Python objects and the heap's bytes in use stayed flat (issue 10; measured in
  docs/DESIGN-NOTES.md, "Gateway").
- At import (each worker process) the soft limit on open files is raised to the hard limit: a
  worker holds one descriptor per connection, and the soft default (1024 on Debian) is far below
  the crowd (10,000 users on 2 workers is ~5,000 connections each).

Idle keep-alive connections are closed by uvicorn itself (`--timeout-keep-alive`, KEEP_ALIVE_SECONDS).
Use: uvicorn --http gateway.serving:BoundedHttpToolsProtocol (dbctl run does).
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import weakref
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.config import ServerSettings
from gateway.errors import PROBLEM_JSON, ApiError
from gateway.shedding import ADMITTED, GATE, exempt

LIMITS = ServerSettings.from_env()


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (no privilege needed); returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1048576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a sandbox may refuse: serve with what there is
            return soft, soft
        return soft, target
    return soft, soft


OPEN_FILES = raise_open_files_limit()


def tune_gc(gen0: int) -> None:
    """Once the app is loaded (the first connection): everything alive then (modules, the app,
    pools) moves to the permanent generation, which no collection walks again, and the young
    generation is collected every `gen0` allocations instead of 700, its elders 10x less often
    than Python's default. Measured (issue 10, hot reserve, 1000 connections): the loop's lag
    p99 160 ms with Python's defaults, 40 ms so; with the collector off 30-40 ms."""
    if gen0 and not _gc_tuned:
        _gc_tuned.append(True)
        gc.freeze()
        gc.set_threshold(gen0, 50, 100)


_gc_tuned: list[bool] = []

END_OF_HEAD = b"\r\n\r\n"
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# After a refusal (503 busy, Retry-After: 1), a request on the same connection within this many
# seconds (plus the loop's current lateness: a loop running late reads every comeback late) is a
# client asking again at once: it is refused too (if the process is still over its bound) and the
# connection is then not read for SHED_PAUSE_MS. A user who comes back later, as a person
# thinking does, is never held: the pause delayed every comeback within SHED_PAUSE_MS, and those
# answers were the shed p99 of the overload bench (~255 ms, issue 10).
QUICK_COMEBACK = 0.05


class GatewayLoop(asyncio.SelectorEventLoop):
    """asyncio's loop (`--loop gateway.serving:GatewayLoop`, GATEWAY_LOOP=asyncio), accepting at
    most ACCEPT_BATCH connections each time the listening socket is ready instead of up to the
    whole backlog. The workers share one listening socket; with asyncio's batch the first worker
    to wake took a whole burst of connects (issue 10: 5,929 / 4,111 of 10,000 connections, and
    the fuller worker shed while the other had room). With a small batch a busy worker's loop
    comes back to accept less often than an idle one's, so the idler worker takes more."""

    accept_batch = LIMITS.accept_batch

    def _accept_connection(self, protocol_factory: Any, sock: Any, sslcontext: Any = None, server: Any = None,
                           backlog: int = 100, *args: Any, **kwargs: Any) -> None:  # fmt: skip
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, sock, sslcontext, server, min(backlog, self.accept_batch), *args, **kwargs
        )


# One read buffer per process, shared by every connection (see BoundedHttpToolsProtocol.get_buffer).
READ_BUFFER_BYTES = 256 * 1024  # what asyncio's transport asks recv() for
_read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))


class BoundedHttpToolsProtocol(HttpToolsProtocol, asyncio.BufferedProtocol):
    max_header_bytes = LIMITS.max_header_bytes
    header_timeout = LIMITS.header_timeout
    idle_timeout = LIMITS.keep_alive_timeout
    gc_gen0 = LIMITS.gc_gen0_threshold

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # until on_headers_complete; again after each message
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes seen of the head, to find a terminator split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._shedding = False  # the message being read was refused: drop its body
        self._refused_at = self._resumed_at = -1e9  # loop time of the last refusal, and of the end of its pause

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer(self.idle_timeout)  # nothing sent yet: idle, not a slow head
        GATE.watch(self.loop)
        tune_gc(self.gc_gen0)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The transport reads into this process's one buffer (recv_into), and buffer_updated hands
        # a copy of just the bytes read to the parser. asyncio's default for a plain Protocol is a
        # fresh 256 KiB bytes object per read (recv(262144)), shrunk in place to what arrived:
        # one large malloc and realloc per request, which fragmented the C heap (issue 10 soak).
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        # The loop reads and calls this in one step, so no other connection reuses the buffer meanwhile.
        self.data_received(_read_buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            # Count the head's bytes before the parser sees them: up to the blank line that
            # ends it when that is in this chunk (a body after it is not head), else all of it.
            tail = self._head_tail  # a terminator may straddle two reads
            straddle = (tail + data[:3]).find(END_OF_HEAD) if tail else -1
            end = straddle - len(tail) if straddle >= 0 else data.find(END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else end + 4
            self._head_tail = data[-3:] if len(data) >= 3 else (tail + data)[-3:]
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "header_too_large", f"the request head must be at most {self.max_header_bytes} bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._disarm_head_timer()  # the idle timer of a fresh connection, if any
        self._arm_head_timer(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes, self._head_tail = 0, b""
        self._disarm_head_timer()
        if GATE.over() and self._shed():
            return
        super().on_headers_complete()

    def _shed(self) -> bool:
        """Answer 503 busy now, unless the request is exempt or cannot be answered yet."""
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind an answer still being written: never interleave two
        if self.parser.should_upgrade():
            return False
        path = self.url.split(b"?", 1)[0]
        if path[:1] != b"/":  # absolute-form (http://host/path): rare, let the app parse it
            return False
        if exempt(self.parser.get_method(), path):
            return False
        keep_alive = (
            self.parser.get_http_version() == "1.1" and self.parser.should_keep_alive() and not self.expect_100_continue
        )  # a client waiting for 100-continue may or may not send its body now: close instead
        self.transport.write(GATE.response_bytes(self.server_state.default_headers, keep_alive))
        GATE.refused()
        # A client that asks again at once, ignoring Retry-After: back within QUICK_COMEBACK of its
        # last refusal, or already waiting when the last pause ended (give or take the loop's lag).
        now = self.loop.time()
        soon = QUICK_COMEBACK + GATE.lag
        quick = now - self._refused_at < soon or now - self._resumed_at < soon
        self._refused_at = now
        if keep_alive:
            self._shedding = True  # the body, if any, is read and dropped; then the next request
            if GATE.pause > 0 and quick:  # ... but not before SHED_PAUSE_MS: it waits in its socket,
                self.transport.pause_reading()  # costing nothing, instead of another refusal at once
                self.loop.call_later(GATE.pause, self._resume_after_refusal)
        else:
            self.transport.close()
        return True

    def _resume_after_refusal(self) -> None:
        self._resumed_at = self.loop.time()
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._shedding:
            self._shedding = False
            if self.timeout_keep_alive_task is None and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
        else:
            super().on_message_complete()
        self._reading_head = True
        self._head_bytes, self._head_tail = 0, b""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn's own (without its opt-in reset_contextvars, which `make run` does not set), plus
        # the count of requests in flight: from the task's start to its end, however it ends.
        OneWrite.install(cycle)
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        cycle.scope[ADMITTED] = True  # type: ignore[literal-required]  # decided here: the Shedder lets it pass
        if GATE.max_in_flight and not exempt(cycle.scope["method"].encode(), cycle.scope["raw_path"]):
            GATE.in_flight += 1
            started = self.loop.time()
            task.add_done_callback(lambda _: GATE.done(self.loop.time() - started))

    def _arm_head_timer(self, seconds: float) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._reading_head and self._head_bytes == 0:  # nothing sent at all: just hang up
            self.transport.close()
        elif self._reading_head:
            self._refuse(408, "header_timeout", f"the request head must arrive within {self.header_timeout:g} s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head, while the answer to the request before it is still being sent:
            # never interleave two responses. Read no more, and close once that answer is out.
            self.cycle.keep_alive = False
            self.transport.pause_reading()
            self._reading_head = False
            self._disarm_head_timer()
            return
        problem = ApiError(code, message)  # the one vocabulary: the same problem body as the app's
        assert problem.status == status
        body = json.dumps(problem.body()).encode()
        head = [b"HTTP/1.1 %d %s" % (status, REASONS[status])]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: " + PROBLEM_JSON.encode(), b"content-length: %d" % len(body), b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
        self._reading_head = False
        self._disarm_head_timer()


class OneWrite:
    """Stands in for the transport of one request's cycle: the response head (the first write
    once the cycle has started its response) is held and written together with the next write,
    the first body part. Flushed alone if nothing follows: before a close, and when the response
    is complete (HEAD, 204 and 304 have no body write). Anything else goes to the transport."""

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport) -> None:
        # A weak reference: the cycle holds this object as its transport, and a strong reference
        # back would make every request's cycle a reference cycle, freed only by the collector
        # (measured: RSS +65 MB a minute under the soak until a full collection stalled the loop).
        self._cycle = weakref.ref(cycle)
        self._transport = transport
        self._head: bytes | None = None
        self._head_seen = False

    @classmethod
    def install(cls, cycle: RequestResponseCycle) -> None:
        one = cls(cycle, cycle.transport)
        cycle.transport = one  # type: ignore[assignment]
        on_response = cycle.on_response

        def flush_then_on_response() -> None:
            one.flush()
            on_response()

        cycle.on_response = flush_then_on_response

    def write(self, data: bytes) -> None:
        cycle = self._cycle()
        if not self._head_seen and cycle is not None and cycle.response_started:
            self._head_seen, self._head = True, data  # the head: uvicorn writes it in one piece
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
