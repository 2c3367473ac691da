"""Settings of the dispatcher (composed into the application settings as ``LIKENESS_DISPATCH__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DispatchSettings(BaseModel):
    concurrency: int = Field(
        50, ge=0, description="jobs one process runs at once; 0: render nothing here (front ends and delivery only)"
    )
    backend_concurrency: dict[str, int] = Field(
        default_factory=dict, description="jobs in flight per backend, by backend name (default 8)"
    )
    default_backend_concurrency: int = Field(8, ge=1)
    rate_per_minute: dict[str, float] = Field(
        default_factory=dict, description="submits per minute per backend, by name (default unlimited)"
    )
    tries_per_backend: int = Field(3, ge=1, description="transient failures tolerated before failing over")
    backoff_base_s: float = Field(1.0, gt=0)
    requeue_after_s: float = Field(
        10.0, ge=0, description="a retry wait longer than this puts the job back in the queue instead of holding a slot"
    )
    backoff_cap_s: float = Field(30.0, gt=0)
    breaker_threshold: int = Field(5, ge=1, description="consecutive failures that open a circuit")
    breaker_cooldown_s: float = Field(60.0, gt=0)
    out_of_credit_cooldown_s: float = Field(600.0, gt=0)
    poll_s: float = Field(0.5, gt=0, description="how often an idle dispatcher looks for new jobs")
    safety_poll_s: float = Field(
        10.0, ge=5, description="the same where database notifications wake it (PostgreSQL): a fallback for lost ones"
    )
    drain_s: float = Field(
        25.0, ge=0, description="on SIGTERM, how long running jobs may finish before they go back to the queue"
    )
