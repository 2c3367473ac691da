"""Logging set-up, done once by the CLI: text or JSON lines, job ids kept, secrets never written."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable


class Redactor(logging.Filter):
    """Replaces every configured secret (and Telegram's bot-token URL segment) in log records."""

    _telegram_token = re.compile(r"bot\d+:[A-Za-z0-9_-]{20,}")

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self._telegram_token.sub("bot***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = self.redact(record.getMessage())
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.msg, record.args = message, None
        return True


class KeyValueFormatter(logging.Formatter):
    """``time level logger message key=value…``; extra fields such as job_id become pairs."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        pairs = "".join(f" {k}={v}" for k, v in _extras(record).items())
        text = base + pairs
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str)


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class ReraisedByLibrary(logging.Filter):
    """Drops a library's log of an error it raises to our caller anyway, which reports it once, as one line."""

    def __init__(self, messages: Iterable[str]) -> None:
        super().__init__()
        self.messages = frozenset(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.messages


# python-telegram-bot logs, with a traceback, a start-up step it gives up on (setting the webhook, dropping it
# before polling), then raises the same error to the Telegram front end's start. Only steps with a retry
# limit give up this way; polling retries for ever, so nothing that happens while running is dropped.
TELEGRAM_ABORTED_START = ("%s Failed run number %s of %s. Aborting.",)


def configure(*, fmt: str, level: str, secrets: Iterable[str], stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL, and Telegram's URLs carry the bot token.
    for noisy in ("httpx", "httpcore", "alembic", "telegram.ext.ExtBot", "discord.gateway", "discord.http"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    network_loop = logging.getLogger("telegram.ext")
    network_loop.filters[:] = [f for f in network_loop.filters if not isinstance(f, ReraisedByLibrary)]
    network_loop.addFilter(ReraisedByLibrary(TELEGRAM_ABORTED_START))
