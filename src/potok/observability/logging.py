"""Application logs through structlog: one JSON (or console) record per line on standard error.

Every JSON line has the same shape as the access log's (observability/access_log.py):
`timestamp`, `level`, `event`, `worker`, `request_id` first (`request_id` null outside
a request), then the event's own fields. The supervisor's lines are the same shape with
`worker: "supervisor"`.

One record is one `os.write` of the whole line, newline included: with `--workers N`
every process writes to the same inherited standard error, and a record written in two
calls (`print` writes the text, then the newline) can be cut by another process's
record — two JSON objects on one line. A single write of at most PIPE_BUF (4 KiB) bytes
to a pipe is atomic; to a file, each write lands whole at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
SHAPE = ("timestamp", "level", "event", "worker", "request_id")
"""The fields every JSON line starts with, access log included."""

STDERR = 2


class LineWriter:
    """A structlog logger that writes each record with one `os.write` call."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int = STDERR) -> None:
        self._fd = fd

    def msg(self, message: str | bytes) -> None:
        data = (message if isinstance(message, bytes) else message.encode()) + b"\n"
        write_whole(self._fd, data)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def write_whole(fd: int, data: bytes) -> None:
    """Write all of `data`: one call unless the kernel takes less (a full pipe, a signal)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # standard error gone: nowhere left to say so
        view = view[written:]


def _line_factory(*args: Any) -> LineWriter:
    return LineWriter()


def _shape(worker: str) -> structlog.typing.Processor:
    def shape(logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        ordered = {
            "timestamp": event.pop("timestamp", None),
            "level": event.pop("level", method),
            "event": event.pop("event", ""),
            "worker": event.pop("worker", worker),
            "request_id": event.pop("request_id", None),
        }
        ordered.update(event)
        return ordered

    return shape


def _json(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    # The standard library's separators (`"event": "listening"`), as structlog's own
    # renderer wrote them: scripts that grep the logs keep working.
    return json.dumps(event, default=str)


def configure_logging(level: str = "info", fmt: str = "json", worker: str = "0") -> None:
    """Configure this process's logs; `worker` is its id ("supervisor" for the parent)."""
    renderer: structlog.typing.Processor = (
        _json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            _shape(worker),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_line_factory,
        cache_logger_on_first_use=True,
    )
