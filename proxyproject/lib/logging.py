"""Structured logging: one event name plus key/value fields per line.

JSON lines when debug is off (for log shippers), `event key=value` text when on (for people).
Callers use `log_event(logger, "Request completed", request_id=..., status=...)`.

Field values and messages often carry what a client sent (a model name, a path, a Host header), so
both formats escape unprintable characters (`proxyproject.lib.printable`): no value can write a line of
its own, and text values holding spaces, quotes or `=` are quoted so none can fake another field.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings

from proxyproject.lib.printable import escape_unprintable

_FIELDS_ATTR = "event_fields"
_LIMITED_ATTR = "disallowed_host_limited"
_NEEDS_QUOTES = frozenset(' "=')
_SCALARS = frozenset({bool, int, float})


def skip_unprinted_record_fields() -> None:
    """Neither format prints where a line was logged from, nor the thread or process: the logging
    HOWTO's switches stop every record from looking them up (a walk up the stack, the current
    thread, the process id and name). For the web worker, whose one "Request completed" line per
    request this made 1% of the request's instructions; commands and Celery keep them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS_ATTR: fields})


def _clean(value: Any) -> Any:
    """Strings escaped and containers cleaned through; other values are left to orjson (numbers,
    dates, None as JSON has them; anything else through `_json_default`)."""
    if isinstance(value, str):
        return escape_unprintable(value)
    if isinstance(value, dict):
        return {escape_unprintable(str(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(item) for item in value]
    return value


def _clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` itself when nothing in it needs escaping (the usual line: ids, numbers, flags), so
    the one log line per request costs no copy; else a cleaned copy."""
    for value in fields.values():
        kind = type(value)
        if kind is str:
            if not value.isprintable():
                return {escape_unprintable(str(key)): _clean(item) for key, item in fields.items()}
        elif value is not None and kind not in _SCALARS:
            return {escape_unprintable(str(key)): _clean(item) for key, item in fields.items()}
    return fields


def _json_default(value: Any) -> str:
    return escape_unprintable(str(value))


def _text_value(value: Any) -> str:
    text = escape_unprintable(value if isinstance(value, str) else str(value))
    if text == "" or not _NEEDS_QUOTES.isdisjoint(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class StructuredFormatter(logging.Formatter):
    def __init__(self, as_json: bool = True) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, {})
        timestamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        message = escape_unprintable(record.getMessage())
        if self.as_json:
            payload = {
                "time": timestamp,
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": message,
                **_clean_fields(fields),
            }
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            return orjson.dumps(payload, default=_json_default).decode()
        text = " ".join(f"{escape_unprintable(str(key))}={_text_value(value)}" for key, value in fields.items())
        line = f"{timestamp} {record.levelname:<7} {record.name}: {message}" + (f" {text}" if text else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class DisallowedHostLogFilter(logging.Filter):
    """Django logs each request with a Host outside ALLOWED_HOSTS at ERROR with a traceback: anyone
    can send those, one per request, and flood the logs. Attached to `django.security.DisallowedHost`,
    this keeps one WARNING line without traceback per DISALLOWED_HOST_LOG_INTERVAL seconds per
    process, naming the host and path and counting the lines dropped since the last one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._lock = threading.Lock()
        self._next_line_at = float("-inf")
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _LIMITED_ATTR, False):
            return True  # let through by another instance: Django may configure logging more than once
        now = self.clock()
        with self._lock:
            if now < self._next_line_at:
                self._suppressed += 1
                return False
            suppressed, self._suppressed = self._suppressed, 0
            self._next_line_at = now + settings.DISALLOWED_HOST_LOG_INTERVAL
        request = getattr(record, "request", None)
        fields = dict(getattr(record, _FIELDS_ATTR, {}))
        if request is not None:
            fields.setdefault("host", request.META.get("HTTP_HOST", "")[:256])
            fields.setdefault("path", request.path[:256])
        fields["suppressed"] = suppressed
        setattr(record, _FIELDS_ATTR, fields)
        setattr(record, _LIMITED_ATTR, True)
        record.msg, record.args = "Invalid Host header refused", ()
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
