"""The operator's money report: per UTC day and backend, what was rendered, spent and charged, and what was sold."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.quota import utc_day
from storage.states import JobState, LedgerKind

_j, _i, _l, _p = t.jobs.c, t.images.c, t.ledger.c, t.purchases.c


@dataclass
class BackendDay:
    """One backend on one UTC day: the jobs that ended then."""

    day: str
    backend: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    images: int = 0
    spend_usd: float = 0.0
    credits_charged: int = 0
    likeness_sum: float = 0.0
    likeness_scored: int = 0

    @property
    def failure_rate(self) -> float | None:
        ended = self.succeeded + self.failed
        return None if ended == 0 else self.failed / ended

    @property
    def likeness(self) -> float | None:
        """The mean likeness of the day's scored outputs; None when none was scored."""
        return None if self.likeness_scored == 0 else self.likeness_sum / self.likeness_scored


@dataclass
class SalesDay:
    """Credits sold on one platform on one UTC day, and credits taken back by refunds that day."""

    day: str
    platform: str
    purchases: int = 0
    credits_sold: int = 0
    price: int = 0  # Stars on Telegram; Discord keeps its prices
    refunds: int = 0
    credits_refunded: int = 0


@dataclass(frozen=True)
class Report:
    start: float
    end: float
    backends: list[BackendDay] = field(default_factory=list)
    sales: list[SalesDay] = field(default_factory=list)


def collect(*, session: Connection, start: float, end: float) -> Report:
    """Jobs that ended, and purchases made or refunded, in [start, end), per UTC day."""
    images = (
        select(
            _i.job_id,
            func.count().label("images"),
            func.sum(_i.likeness).label("likeness_sum"),
            func.count(_i.likeness).label("scored"),
        )
        .group_by(_i.job_id)
        .subquery()
    )
    charged = (
        select(_l.job_id, func.sum(_l.amount).label("credits"))
        .where(_l.kind == LedgerKind.COMMIT)
        .group_by(_l.job_id)
        .subquery()
    )
    rows = session.execute(
        select(
            _j.finished_at,
            _j.backend,
            _j.route,
            _j.state,
            _j.spend_usd,
            func.coalesce(images.c.images, 0).label("images"),
            func.coalesce(images.c.likeness_sum, 0.0).label("likeness_sum"),
            func.coalesce(images.c.scored, 0).label("scored"),
            func.coalesce(charged.c.credits, 0).label("credits"),
        )
        .outerjoin(images, images.c.job_id == _j.id)
        .outerjoin(charged, charged.c.job_id == _j.id)
        .where(_j.finished_at >= start, _j.finished_at < end)
    )
    days: dict[tuple[str, str], BackendDay] = {}
    for row in rows:
        # A job that failed on its first backend before any request was taken has no backend recorded: the
        # first of its route is the one it was tried on.
        backend = row.backend or (row.route[0] if row.route else "none")
        key = (utc_day(row.finished_at), str(backend))
        entry = days.setdefault(key, BackendDay(*key))
        entry.jobs += 1
        entry.succeeded += row.state == JobState.SUCCEEDED
        entry.failed += row.state == JobState.FAILED
        entry.images += int(row.images)
        entry.spend_usd += float(row.spend_usd or 0.0)
        entry.credits_charged += int(row.credits)
        entry.likeness_sum += float(row.likeness_sum)
        entry.likeness_scored += int(row.scored)

    sales: dict[tuple[str, str], SalesDay] = {}
    sold = select(_p.at, _p.platform, _p.credits, _p.price).where(_p.at >= start, _p.at < end)
    for at, platform, credits, price in session.execute(sold):
        sale = sales.setdefault((utc_day(at), platform), SalesDay(utc_day(at), platform))
        sale.purchases += 1
        sale.credits_sold += int(credits)
        sale.price += int(price)
    refunded = select(_p.refunded_at, _p.platform, _p.credits_removed).where(
        _p.refunded_at >= start, _p.refunded_at < end
    )
    for at, platform, removed in session.execute(refunded):
        sale = sales.setdefault((utc_day(at), platform), SalesDay(utc_day(at), platform))
        sale.refunds += 1
        sale.credits_refunded += int(removed)
    return Report(
        start,
        end,
        sorted(days.values(), key=lambda entry: (entry.day, entry.backend)),
        sorted(sales.values(), key=lambda sale: (sale.day, sale.platform)),
    )
