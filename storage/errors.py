"""Errors the store raises for callers to turn into replies."""

from __future__ import annotations

from enum import StrEnum


class RefusalReason(StrEnum):
    BANNED = "banned"
    NO_CREDITS = "no_credits"
    DAILY_LIMIT = "daily_limit"
    UNKNOWN_USER = "unknown_user"


class QuotaRefused(Exception):
    """A submit the user's quota does not allow. Nothing was written."""

    def __init__(self, reason: RefusalReason, *, needed: int = 0, available: int = 0, limit: int = 0) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.needed = needed
        self.available = available
        self.limit = limit


class DuplicateJob(Exception):
    """A job with this idempotency key exists already. Nothing was written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id
