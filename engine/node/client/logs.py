"""The job's log file: everything the client and its libraries log, never the password."""

from __future__ import annotations

import logging
from pathlib import Path


class Redact(logging.Filter):
    """Belt and braces: whatever a library logs, the password never reaches the log file."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg = message.replace(self.secret, "********")
            record.args = None
        return True


def setup_logging(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(password))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
