"""The states a job, its delivery and a ledger entry can be in."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
UNFINISHED_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})


class DeliveryState(StrEnum):
    NONE = "none"  # not finished yet
    PENDING = "pending"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"


class LedgerKind(StrEnum):
    RESERVE = "reserve"
    COMMIT = "commit"
    REFUND = "refund"
    GRANT = "grant"
    ADJUST = "adjust"
    PURCHASE = "purchase"  # credits bought (Telegram Stars, a Discord SKU)
    PURCHASE_REFUND = "purchase_refund"  # credits taken back with a refunded purchase


class Tier(StrEnum):
    FREE = "free"
    PLUS = "plus"
    PRO = "pro"
    OPERATOR = "operator"  # local operator user: no quota


# Share of the queue each tier gets relative to a free user (start-time fair queuing weight).
TIER_WEIGHTS: dict[Tier, float] = {Tier.FREE: 1.0, Tier.PLUS: 2.0, Tier.PRO: 4.0, Tier.OPERATOR: 4.0}
