"""The reconciler: checks that the quota totals on the user rows agree with the jobs and the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from storage import tables as t
from storage.states import UNFINISHED_STATES, DeliveryState, JobState, LedgerKind

# Ledger kinds that move a user's credits outside any job.
_GIVEN = [LedgerKind.GRANT, LedgerKind.ADJUST, LedgerKind.PURCHASE, LedgerKind.PURCHASE_REFUND]


@dataclass(frozen=True)
class Drift:
    """A broken quota invariant, for the operator."""

    kind: str
    user_id: int | None
    job_id: str | None
    expected: int
    found: int


def find_drift(*, session: Connection) -> list[Drift]:
    """Check the quota invariants; an empty list means the books balance.

    - a user's ``reserved`` equals the cost of their unfinished jobs, ``running`` their running jobs;
    - every job has one reserve, and once finished exactly one commit or refund (none before), except a
      charged result that could not be delivered: a commit, then a refund, which the credits include;
    - a user's ``credits`` equal their grants, adjustments and purchases (less refunded ones) minus their
      commits;
    - no user (other than an unlimited one, who is never charged) has less credit than their jobs hold:
      a negative free balance means a job was, or will be, charged from credits that are not there.
    """
    drift: list[Drift] = []
    j, u, led = t.jobs.c, t.users.c, t.ledger.c
    in_flight = (
        select(j.user_id, func.sum(j.cost).label("cost"))
        .where(j.state.in_([s.value for s in UNFINISHED_STATES]))
        .group_by(j.user_id)
        .subquery()
    )
    running = (
        select(j.user_id, func.count().label("jobs")).where(j.state == JobState.RUNNING).group_by(j.user_id).subquery()
    )
    rows = session.execute(
        select(
            u.id,
            u.reserved,
            u.running,
            u.credits,
            u.unlimited,
            func.coalesce(in_flight.c.cost, 0).label("cost"),
            func.coalesce(running.c.jobs, 0).label("running_jobs"),
        )
        .outerjoin(in_flight, in_flight.c.user_id == u.id)
        .outerjoin(running, running.c.user_id == u.id)
    )
    for row in rows:
        if int(row.reserved) != int(row.cost):
            drift.append(Drift("reserved", row.id, None, int(row.cost), int(row.reserved)))
        if int(row.running) != int(row.running_jobs):
            drift.append(Drift("running", row.id, None, int(row.running_jobs), int(row.running)))
        if not row.unlimited and int(row.credits) < int(row.reserved):
            drift.append(Drift("negative_balance", row.id, None, 0, int(row.credits) - int(row.reserved)))

    settled = (
        select(led.job_id, func.count().label("n"))
        .where(led.kind.in_([LedgerKind.COMMIT, LedgerKind.REFUND]))
        .group_by(led.job_id)
        .subquery()
    )
    reserves = (
        select(led.job_id, func.count().label("n"))
        .where(led.kind == LedgerKind.RESERVE)
        .group_by(led.job_id)
        .subquery()
    )
    rows = session.execute(
        select(
            j.id,
            j.user_id,
            j.state,
            j.delivery_state,
            func.coalesce(settled.c.n, 0).label("settled"),
            func.coalesce(reserves.c.n, 0).label("reserves"),
        )
        .outerjoin(settled, settled.c.job_id == j.id)
        .outerjoin(reserves, reserves.c.job_id == j.id)
    )
    unfinished = {s.value for s in UNFINISHED_STATES}
    for row in rows:
        if int(row.reserves) != 1:
            drift.append(Drift("reserve_entries", row.user_id, row.id, 1, int(row.reserves)))
        expected = 0 if row.state in unfinished else 1
        if row.state == JobState.SUCCEEDED and row.delivery_state == DeliveryState.UNDELIVERABLE and row.settled == 2:
            expected = 2  # charged, then refunded as undeliverable
        if int(row.settled) != expected:
            drift.append(Drift("settle_entries", row.user_id, row.id, expected, int(row.settled)))

    # Ledger rows outlive forgotten jobs, so a refund after a charge is found from the ledger alone.
    commits = t.ledger.alias("commits")
    charged = select(commits.c.job_id).where(commits.c.kind == LedgerKind.COMMIT)
    movements = (
        select(
            led.user_id,
            func.sum(led.amount).filter(led.kind.in_(_GIVEN)).label("granted"),
            func.sum(led.amount).filter(led.kind == LedgerKind.COMMIT).label("spent"),
            func.sum(led.amount).filter(led.kind == LedgerKind.REFUND, led.job_id.in_(charged)).label("returned"),
        )
        .group_by(led.user_id)
        .subquery()
    )
    rows = session.execute(
        select(
            u.id,
            u.credits,
            u.unlimited,
            func.coalesce(movements.c.granted, 0).label("granted"),
            func.coalesce(movements.c.spent, 0).label("spent"),
            func.coalesce(movements.c.returned, 0).label("returned"),
        ).outerjoin(movements, movements.c.user_id == u.id)
    )
    for row in rows:
        if row.unlimited:
            continue
        expected = int(row.granted) - int(row.spent) + int(row.returned)
        if int(row.credits) != expected:
            drift.append(Drift("credits", row.id, None, expected, int(row.credits)))
    return drift
