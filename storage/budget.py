"""Daily provider budgets: what each backend spent today, what its running jobs hold, and the alerts sent.

A job about to start on a backend takes a hold of its estimated cost, granted only if the day's spend plus
the holds of running jobs plus this one stay within the backend's budget and the total budget. Holders of one
budget take a lock first (an advisory lock on PostgreSQL; SQLite's writers are serial anyway), and read the
spend and the holds in one statement, so a job finishing meanwhile (its hold turning into spend in one
transaction) is counted once, as one or the other. A hold counts while its job runs: a crashed worker's hold
lapses with its lease, with nothing to clean up.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, literal_column, select, text
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.models import BudgetAlert
from storage.quota import utc_day

TOTAL = "total"  # the budget over every backend together

_j, _h, _a = t.jobs.c, t.budget_holds.c, t.budget_alerts.c
_RUNNING = _j.state == literal_column("'running'")


def day_start(now: float) -> float:
    """The start of the UTC day ``now`` falls in."""
    return dt.datetime.strptime(utc_day(now), "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class Use:
    """One budget today: the spend recorded and the estimates held by running jobs, against its limit."""

    budget: str
    spent_usd: float
    held_usd: float
    limit_usd: float | None = None  # None: no budget set

    @property
    def used_usd(self) -> float:
        return self.spent_usd + self.held_usd

    @property
    def share(self) -> float | None:
        """The part of the budget used (1.0: all of it); None without a budget, infinite for a zero one."""
        if self.limit_usd is None:
            return None
        if self.limit_usd <= 0:
            return float("inf") if self.used_usd > 0 else 0.0
        return self.used_usd / self.limit_usd


@dataclass(frozen=True)
class HoldOutcome:
    granted: bool
    uses: tuple[Use, ...]  # the budgets checked, this job's estimate included when granted
    refused_by: str | None = None  # the budget it would have passed


def _spent(backend: str | None, start: float) -> object:
    query = select(func.coalesce(func.sum(_j.spend_usd), 0.0)).where(_j.finished_at >= start)
    query = query.where(_j.backend.isnot(None) if backend is None else _j.backend == backend)
    return query.scalar_subquery()


def _held(backend: str | None, job_id: str) -> object:
    query = (
        select(func.coalesce(func.sum(_h.estimate_usd), 0.0))
        .select_from(t.budget_holds.join(t.jobs, _j.id == _h.job_id))
        .where(_RUNNING, _h.job_id != job_id)
    )
    if backend is not None:
        query = query.where(_h.backend == backend)
    return query.scalar_subquery()


def _lock(session: Connection, names: list[str]) -> None:
    if session.dialect.name != "postgresql":
        return  # SQLite: the write transaction holds the database's one write lock already
    for name in sorted(names):  # always in the same order: two holders never wait on each other crosswise
        key = zlib.crc32(f"likeness-budget:{name}".encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def usage(*, session: Connection, backend: str, now: float, job_id: str = "") -> tuple[Use, Use]:
    """Today's use of ``backend``'s budget and of the total, not counting ``job_id``'s own hold."""
    start = day_start(now)
    row = session.execute(
        select(
            _spent(backend, start).label("spent"),  # type: ignore[attr-defined]
            _held(backend, job_id).label("held"),  # type: ignore[attr-defined]
            _spent(None, start).label("spent_all"),  # type: ignore[attr-defined]
            _held(None, job_id).label("held_all"),  # type: ignore[attr-defined]
        )
    ).one()
    return (
        Use(backend, float(row.spent), float(row.held)),
        Use(TOTAL, float(row.spent_all), float(row.held_all)),
    )


def hold(
    *, session: Connection, job_id: str, backend: str, estimate_usd: float, limits: Mapping[str, float], now: float
) -> HoldOutcome:
    """Hold ``estimate_usd`` of ``backend``'s budget (and of the total) for the job, if that stays within
    both limits; a job holds one backend at a time, so a new hold replaces its previous one."""
    names = [name for name in (backend, TOTAL) if name in limits]
    _lock(session, names)
    own, total = usage(session=session, backend=backend, now=now, job_id=job_id)
    uses = [Use(use.budget, use.spent_usd, use.held_usd, limits.get(use.budget)) for use in (own, total)]
    for use in uses:
        if use.limit_usd is not None and use.used_usd + estimate_usd > use.limit_usd + 1e-9:
            return HoldOutcome(False, tuple(uses), use.budget)
    statement = t.upsert_insert(session, t.budget_holds).values(
        job_id=job_id, backend=backend, estimate_usd=estimate_usd, at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["job_id"], set_={"backend": backend, "estimate_usd": estimate_usd, "at": now}
        )
    )
    granted = tuple(Use(u.budget, u.spent_usd, u.held_usd + estimate_usd, u.limit_usd) for u in uses)
    return HoldOutcome(True, granted)


def today(*, session: Connection, backends: list[str], limits: Mapping[str, float], now: float) -> list[Use]:
    """Every named backend's use today, and the total's, with their limits (for gauges and reports)."""
    start = day_start(now)
    spent = {
        str(name): float(total)
        for name, total in session.execute(
            select(_j.backend, func.sum(_j.spend_usd))
            .where(_j.finished_at >= start, _j.backend.isnot(None))
            .group_by(_j.backend)
        )
    }
    held = {
        str(name): float(total)
        for name, total in session.execute(
            select(_h.backend, func.sum(_h.estimate_usd))
            .select_from(t.budget_holds.join(t.jobs, _j.id == _h.job_id))
            .where(_RUNNING)
            .group_by(_h.backend)
        )
    }
    names = list(dict.fromkeys([*backends, *spent, *held]))
    uses = [Use(name, spent.get(name, 0.0), held.get(name, 0.0), limits.get(name)) for name in names]
    uses.append(Use(TOTAL, sum(spent.values()), sum(held.values()), limits.get(TOTAL)))
    return uses


def estimate_of(*, session: Connection, job_id: str) -> float | None:
    """The estimate the job holds (or held last), if any."""
    value = session.execute(select(_h.estimate_usd).where(_h.job_id == job_id)).scalar()
    return None if value is None else float(value)


def reach(*, session: Connection, use: Use, threshold: int, now: float) -> bool:
    """Note that ``use`` reached ``threshold`` percent of its budget today; True only for the first note,
    so each threshold is told once per budget and day, whichever process sees it first."""
    assert use.limit_usd is not None
    inserted = session.execute(
        t.upsert_insert(session, t.budget_alerts)
        .values(
            day=utc_day(now),
            budget=use.budget,
            threshold=threshold,
            used_usd=use.used_usd,
            limit_usd=use.limit_usd,
            at=now,
            sent_at=None,
        )
        .on_conflict_do_nothing(index_elements=["day", "budget", "threshold"])
    )
    return bool(inserted.rowcount == 1)


def unsent_alerts(*, session: Connection) -> list[BudgetAlert]:
    rows = session.execute(select(t.budget_alerts).where(_a.sent_at.is_(None)).order_by(_a.at))
    return [BudgetAlert.model_validate(dict(row._mapping)) for row in rows]


def mark_sent(*, session: Connection, day: str, budget: str, threshold: int, now: float) -> bool:
    """Claim an alert for sending; False when another process claimed it first."""
    result = session.execute(
        t.budget_alerts.update()
        .where(_a.day == day, _a.budget == budget, _a.threshold == threshold, _a.sent_at.is_(None))
        .values(sent_at=now)
    )
    return bool(result.rowcount == 1)
