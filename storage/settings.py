"""Settings sections the store defines; the application composes them into its one Settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CreditSettings(BaseModel):
    per_image: int = Field(1, ge=0, description="credits one image costs")
    new_user: int = Field(10, ge=0, description="credits a new user starts with")
    daily_jobs: int = Field(20, ge=0, description="jobs per user per UTC day, unless overridden")


class QueueSettings(BaseModel):
    lease_s: float = Field(30.0, gt=0, description="how long a claim holds a job without a heartbeat")
    heartbeat_s: float = Field(10.0, gt=0, description="how often a worker renews its lease")
    job_deadline_s: float = Field(600.0, gt=0, description="a job still unfinished after this fails")
    running_cap: int = Field(2, ge=1, description="jobs one user may have running at once")
