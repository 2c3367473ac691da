"""SQLModel tables. Timestamps are UTC epoch seconds (floats): portable and cheap to compare."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from storage.states import DeliveryState, JobState, Tier


def _json(**kw: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False), **kw)


def _json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", name="uq_users_platform_id"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    platform_user_id: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=128)
    tier: Tier = Field(default=Tier.FREE, sa_type=String(16))
    banned: bool = False
    ban_reason: str = Field(default="", max_length=256)
    unlimited: bool = False
    credits: int = 0
    reserved: int = 0
    running: int = 0  # jobs of this user now running: the claim's running-cap check reads it under a row lock
    daily_jobs_limit: int | None = None
    running_cap: int | None = None
    day: str = Field(default="", max_length=10)  # UTC date the day_jobs counter belongs to
    day_jobs: int = 0
    last_vfinish: float = 0.0  # fair-queuing finish tag of the user's latest job
    created_at: float = 0.0
    privacy_accepted_at: float | None = None  # when the user agreed to the privacy notice; None: not yet
    language: str | None = Field(default=None, max_length=16)  # chosen with /language; None: not chosen
    locale: str | None = Field(default=None, max_length=16)  # the language the user's platform last reported


class Identity(SQLModel, table=True):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_identities_user_name"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=64)
    is_default: bool = False
    photo_keys: list[str] = _json_list()
    created_at: float = 0.0


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "ix_jobs_queue",
            "fair_key",
            "created_at",
            "id",
            sqlite_where=text("state = 'queued'"),
            postgresql_where=text("state = 'queued'"),
        ),
        Index("ix_jobs_user_state", "user_id", "state"),
        Index("ix_jobs_state_lease", "state", "lease_until"),
        Index(
            "ix_jobs_delivery",
            "delivery_state",
            sqlite_where=text("delivery_state = 'pending'"),
            postgresql_where=text("delivery_state = 'pending'"),
        ),
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_retention", "expired", "finished_at"),
        Index("ix_jobs_spend", "backend", "finished_at"),  # a backend's spend today, for its budget
    )

    id: str = Field(primary_key=True, max_length=128)  # the idempotency key from the chat event
    user_id: int = Field(foreign_key="users.id")
    kind: str = Field(default="imagine", max_length=16)
    parent_id: str | None = Field(default=None, max_length=128)
    state: JobState = Field(default=JobState.QUEUED, sa_type=String(16))
    params: dict[str, Any] = _json()
    face_keys: list[str] = _json_list()
    route: list[str] = _json_list()
    backend: str | None = Field(default=None, max_length=32)
    pinned: bool = False  # operator pinned one backend: no failover
    attempt: int = 0
    max_attempts: int = 3
    fair_key: float = 0.0
    run_after: float = 0.0
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: float | None = None
    deadline_at: float | None = None
    cancel_requested: bool = False
    provider_ref: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    cost: int = 0
    spend_usd: float = 0.0
    seed: str | None = Field(default=None, max_length=64)
    reply_target: dict[str, Any] = _json()
    delivery_state: DeliveryState = Field(default=DeliveryState.NONE, sa_type=String(16))
    delivery_path: str | None = Field(default=None, max_length=32)
    delivery_attempts: int = 0
    # Messages of the reply already posted: a retry resumes after them. Defaulted by the database, so
    # code that predates the column can still insert jobs.
    delivery_parts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    delivery_next_at: float | None = None  # the next try after a failed one; None: as soon as possible
    delivery_failing_since: float | None = None  # the first failed try: the retry window counts from it
    error: str | None = Field(default=None, max_length=64)
    error_detail: str | None = Field(default=None, max_length=1024)
    expired: bool = False  # photos and outputs removed by retention; the row stays as history
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=128, index=True)
    at: float = 0.0
    kind: str = Field(max_length=32)
    data: dict[str, Any] = _json()


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger"
    # Exactly one reserve, and one commit or refund, per job; NULL job ids (grants) never collide.
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    job_id: str | None = Field(default=None, max_length=128)
    kind: str = Field(max_length=16)
    amount: int
    at: float = 0.0
    actor: str = Field(default="", max_length=64)
    note: str = Field(default="", max_length=256)


class Image(SQLModel, table=True):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_images_job_index"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=128, index=True)
    index: int
    blob_key: str = Field(max_length=80)
    sha256: str = Field(max_length=64)
    content_type: str = Field(max_length=32)
    size_bytes: int
    width: int
    height: int
    nsfw: bool = False
    likeness: float | None = None  # the face judge's score against the job's identity; None: not scored
    judge: str | None = Field(default=None, max_length=32)  # which judge scored it


class FaceEmbedding(SQLModel, table=True):
    """A face's identity vector (biometric data): of a saved identity's photo, or of a job's face photo."""

    __tablename__ = "face_embeddings"

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=160, index=True)  # "identity:<id>" or "job:<id>", as blob references name them
    position: int  # the photo's place among its owner's photos
    judge: str = Field(max_length=32)  # vectors of two judges never compare
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # little-endian float32
    created_at: float = 0.0


class BlobRef(SQLModel, table=True):
    """Who uses a blob. A blob is deleted only when its last reference goes."""

    __tablename__ = "blob_refs"

    blob_key: str = Field(primary_key=True, max_length=80)
    owner: str = Field(primary_key=True, max_length=160)  # e.g. "job:<id>", "identity:<id>"


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float = 0.0
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    target: str = Field(default="", max_length=128)
    detail: dict[str, Any] = _json()


class Worker(SQLModel, table=True):
    """A process that renders, as it last said: what it serves now, refreshed with its heartbeat."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=128)  # the lease owner name of its claims
    host: str = Field(max_length=255)
    pid: int
    version: str = Field(max_length=32)
    backends: dict[str, int] = _json()  # backend it can serve now -> free slots
    gpu_name: str | None = Field(default=None, max_length=128)
    gpu_memory_mb: int | None = None
    draining: bool = False  # stopping: claims nothing more
    started_at: float = 0.0
    last_seen: float = 0.0


class ScopeSettings(SQLModel, table=True):
    """Operator settings per scope: "global", "telegram:chat:<id>", "discord:guild:<id>"."""

    __tablename__ = "scope_settings"

    scope: str = Field(primary_key=True, max_length=96)
    paused: bool = False
    pause_reason: str = Field(default="", max_length=256)
    daily_jobs: int | None = None
    daily_images: int | None = None  # images the scope's members may render per UTC day there; None: no cap
    channels: list[str] = _json_list()
    safety_policy: str | None = Field(default=None, max_length=16)  # None: the next scope's, or the setting
    updated_at: float = 0.0


class ScopeDay(SQLModel, table=True):
    """Images rendered in one scope (a Discord server, a Telegram group) on one UTC day, against its cap."""

    __tablename__ = "scope_days"

    scope: str = Field(primary_key=True, max_length=96)
    day: str = Field(primary_key=True, max_length=10)
    images: int = 0


class Purchase(SQLModel, table=True):
    """Credits a user bought: a Telegram Stars payment or a Discord entitlement, credited once per charge."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("platform", "charge_id", name="uq_purchases_charge"),
        Index("ix_purchases_user", "user_id", "at"),
        Index("ix_purchases_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    charge_id: str = Field(max_length=128)  # telegram_payment_charge_id, or the Discord entitlement id
    user_id: int = Field(foreign_key="users.id")
    credits: int
    price: int = 0  # in ``currency``'s smallest unit: Stars are whole; Discord keeps its prices to itself
    currency: str = Field(max_length=16)
    product: str = Field(max_length=64)  # the pack's invoice payload, or the SKU id
    provider_charge_id: str = Field(default="", max_length=128)
    state: str = Field(default="paid", max_length=16)  # paid, refunding (the platform is being asked), refunded
    credits_removed: int = 0  # taken back by the refund (less than ``credits`` when some were spent)
    at: float = 0.0
    refunded_at: float | None = None


class BudgetHold(SQLModel, table=True):
    """The estimated cost a running job holds against its backend's daily budget until it finishes."""

    __tablename__ = "budget_holds"
    __table_args__ = (Index("ix_budget_holds_backend", "backend"),)

    job_id: str = Field(primary_key=True, max_length=128)
    backend: str = Field(max_length=32)
    estimate_usd: float
    at: float = 0.0


class BudgetAlert(SQLModel, table=True):
    """A budget threshold reached on a UTC day: written once, then told to the admins once."""

    __tablename__ = "budget_alerts"

    day: str = Field(primary_key=True, max_length=10)
    budget: str = Field(primary_key=True, max_length=32)  # a backend's name, or "total"
    threshold: int = Field(primary_key=True)  # percent of the budget: 80 or 100
    used_usd: float
    limit_usd: float
    at: float = 0.0
    sent_at: float | None = None


class PendingJob(SQLModel, table=True):
    """A costly job the user has been asked to confirm: queued (and charged) only when they do."""

    __tablename__ = "pending_jobs"

    id: str = Field(primary_key=True, max_length=128)  # the id the job gets: a repeated confirmation is a duplicate
    user_id: int = Field(foreign_key="users.id", index=True)
    cost: int
    job: dict[str, Any] = _json()  # the job as it will be submitted
    created_at: float = 0.0
