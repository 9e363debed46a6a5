"""Structured log lines: one event per line, UTC time, level, logger, message."""

from __future__ import annotations

import logging
import time

PACKAGE = "hark_fleet."


class LineFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        record.name = name.removeprefix(PACKAGE)  # `hub.ingest`, not `hark_fleet.hub.ingest`
        try:
            text = super().format(record)
        finally:
            record.name = name
        return text.replace("\n", "\\n ")  # keep one event on one line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # amqtt and transitions log every packet and state change at INFO.
    for noisy in ("amqtt", "transitions", "tornado.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
