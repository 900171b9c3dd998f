"""Logging: JSON lines in production, readable lines in a terminal.

``SMARTROUTE_LOG_FORMAT`` chooses; unset, a terminal gets rich's console output and
anything else (a container, a log shipper) gets one JSON object per line.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from smartroute.infra.settings import Settings

# user:password@ in a connection URL is never written to a log.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+]+://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I)


def mask_url(text: str) -> str:
    """Replace the password in any connection URL in ``text`` with ***."""
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


class _MaskPasswords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = mask_url(str(record.msg))
        return True


def configure_logging(settings: Settings, *, stream=None) -> None:
    stream = stream or sys.stderr
    fmt = settings.log_format or ("console" if stream.isatty() else "json")
    if fmt == "console":
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    handler.addFilter(_MaskPasswords())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Library chatter (and Celery's line per task received and succeeded) stays at
    # WARNING unless asked for.
    for noisy in (
        "sqlalchemy",
        "kombu",
        "amqp",
        "urllib3",
        "werkzeug",
        "pgserver",
        "alembic.runtime",
        "celery.worker.strategy",
        "celery.app.trace",
        "celery.beat",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
