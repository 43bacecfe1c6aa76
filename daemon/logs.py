"""structlog setup: JSON lines to a rotating file in the state dir; readable text on a terminal
(and on stderr under systemd, which sends it to the journal)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

import structlog

SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def setup(log_file: str | None, level: str = "info", console: bool | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handlers: list[logging.Handler] = []
    if log_file:
        os.makedirs(os.path.dirname(log_file), mode=0o700, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3)
        os.chmod(log_file, 0o600)
        fh.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
                foreign_pre_chain=SHARED,
            )
        )
        handlers.append(fh)
    if console is None:
        console = sys.stderr.isatty() or "JOURNAL_STREAM" in os.environ
    if console:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                foreign_pre_chain=SHARED,
            )
        )
        handlers.append(sh)
    root = logging.getLogger()
    root.handlers = handlers
    root.setLevel(numeric)
    structlog.configure(
        processors=[*SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
