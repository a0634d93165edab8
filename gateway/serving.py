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

Idle keep-alive connections are closed by uvicorn itself (`--timeout-keep-alive`, KEEP_ALIVE_SECONDS).
Use: uvicorn --http gateway.serving:BoundedHttpToolsProtocol (dbctl run does).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import ServerSettings
from gateway.errors import PROBLEM_JSON, ApiError

LIMITS = ServerSettings.from_env()

END_OF_HEAD = b"\r\n\r\n"
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = LIMITS.max_header_bytes
    header_timeout = LIMITS.header_timeout
    idle_timeout = LIMITS.keep_alive_timeout

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # until on_headers_complete; again after each message
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes seen of the head, to find a terminator split across reads
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer(self.idle_timeout)  # nothing sent yet: idle, not a slow head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes, self._head_tail = 0, b""

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
