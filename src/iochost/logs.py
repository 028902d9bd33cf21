"""Daemon logging: human text by default, one JSON object per line with ``--log-format json``."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone
from pathlib import Path

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Fields a log shipper indexes: time, level, logger, message, plus any ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def escape_controls(text: str) -> str:
    """``text`` on one line: every character that is not printable (newline, carriage
    return, ESC, other C0/C1 controls, line and paragraph separators) written as its Python
    escape (``\\n``, ``\\x1b``, ``\\u2028``), so text from the network (a control PV's write, a
    REST path, a plugin's log message) can never forge or hide a line of the text log."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class TextFormatter(logging.Formatter):
    """One line per record: its header and message escaped (``escape_controls``); only a
    traceback, which the daemon writes itself, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def setup_logging(level: str, fmt: str, file: Path | None = None, max_bytes: int = 0, files: int = 1) -> None:
    """Log to stderr, or to ``file`` rotated at ``max_bytes`` keeping ``files`` files in all."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=files - 1,
                                                       encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines at info would drown plugin logs; they are there at debug.
    logging.getLogger("uvicorn.access").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
