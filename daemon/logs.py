"""structlog setup: JSON lines to a rotating file in the state dir; readable text on a terminal
(and on stderr under systemd, which sends it to the journal)."""

from __future__ import annotations

import io
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


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every log file it opens, the rotated ones' successors included, is 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(
            self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
        os.fchmod(fd, 0o600)  # a file an older islurm made 0644
        stream = os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)
        assert isinstance(stream, io.TextIOWrapper)
        return stream


def setup(log_file: str | None, level: str = "info", console: bool | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handlers: list[logging.Handler] = []
    if log_file:
        fh = PrivateRotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3)
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
