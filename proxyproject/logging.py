"""Structured logging: one event name plus key/value fields per line.

JSON lines when debug is off (for log shippers), `event key=value` text when on (for people).
Callers use `log_event(logger, "Request completed", request_id=..., status=...)`.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson

_FIELDS_ATTR = "event_fields"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS_ATTR: fields})


class StructuredFormatter(logging.Formatter):
    def __init__(self, as_json: bool = True) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, {})
        timestamp = dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
        message = record.getMessage()
        if self.as_json:
            payload = {"time": timestamp, "level": record.levelname.lower(), "logger": record.name, "event": message, **fields}
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            return orjson.dumps(payload, default=str).decode()
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{timestamp} {record.levelname:<7} {record.name}: {message}" + (f" {text}" if text else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
