"""Settings sections the store defines; the application composes them into its one Settings."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class CreditSettings(BaseModel):
    per_image: int = Field(1, ge=0, description="credits one image costs")
    new_user: int = Field(10, ge=0, description="credits a new user starts with")
    daily_jobs: int = Field(20, ge=0, description="jobs per user per UTC day, unless overridden")
    confirm_above: int | None = Field(
        None, ge=0, description="jobs costing more credits wait for the user to confirm (more than one image: always)"
    )


class QueueSettings(BaseModel):
    lease_s: float = Field(30.0, gt=0, description="how long a claim holds a job without a heartbeat")
    heartbeat_s: float = Field(10.0, gt=0, description="how often a worker renews its lease")
    job_deadline_s: float = Field(600.0, gt=0, description="a job still unfinished after this fails")
    running_cap: int = Field(2, ge=1, description="jobs one user may have running at once")


class BlobSettings(BaseModel):
    url: str | None = Field(
        None,
        description="where photos and outputs live: a directory (default: blobs/ in the data directory) or "
        "s3://bucket/prefix (credentials, region and endpoint from the AWS_* variables)",
    )

    @field_validator("url")
    @classmethod
    def _known_kind(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme, sep, rest = value.partition("://")
        if sep and scheme != "s3":
            raise ValueError(f"unsupported store {scheme!r}: use a directory or s3://BUCKET[/PREFIX]")
        if sep and not rest.split("/", 1)[0]:
            raise ValueError("s3:// needs a bucket: s3://BUCKET[/PREFIX]")
        return value
