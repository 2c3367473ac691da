"""Delivery bookkeeping and the cancel paths that decide what a user pays, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from storage import delivery, history, jobs, users
from storage import tables as t
from storage.db import MIGRATIONS_DIR, Database
from storage.states import DeliveryState, JobState
from tests.conftest import StoreTarget
from tests.storage.ledger_helpers import claim, credits_of, drift, new_user, submit

IMAGE = jobs.NewImage(0, "b" * 64, "b" * 64, "image/png", 10, 8, 8)


def ledger_of(*, session: Connection, job_id: str) -> list[tuple[str, int]]:
    rows = session.execute(sa.select(t.ledger.c.kind, t.ledger.c.amount).where(t.ledger.c.job_id == job_id))
    return sorted((str(kind), int(amount)) for kind, amount in rows)


async def finished(db: Database, job_id: str, user: int, *, cost: int = 2, now: float = 1000.0) -> None:
    """A job rendered and charged, its result now owed to the chat."""
    await submit(db, job_id, user, cost=cost, now=now)
    job = await claim(db, now=now)
    assert job is not None and job.id == job_id
    assert await db.write(jobs.complete, job_id=job_id, attempt=1, images=[IMAGE], now=now + 1)


async def pending_ids(db: Database, now: float) -> list[str]:
    found = await db.read(delivery.pending_deliveries, platforms=["telegram"], now=now)
    return [job.id for job in found]


async def test_a_completion_after_a_cancel_request_ends_cancelled_and_refunded(db: Database) -> None:
    user = await new_user(db, credits=5)
    await submit(db, "late", user, cost=2)
    job = await claim(db)
    assert job is not None
    assert await db.write(jobs.cancel, job_id="late", now=1001.0) == jobs.CancelOutcome.REQUESTED
    # The worker has not heartbeaten since: it completes the render it was doing.
    ended = await db.write(jobs.complete, job_id="late", attempt=1, images=[IMAGE], now=1002.0)
    assert ended == JobState.CANCELLED
    done = await db.read(jobs.get, job_id="late")
    assert done is not None
    assert (done.state, done.error, done.delivery_state) == ("cancelled", "cancelled", "pending")
    assert await db.read(jobs.images_of, job_id="late") == []
    assert await credits_of(db, user) == (5, 0)  # "you won't be charged" held
    assert await db.read(ledger_of, job_id="late") == [("refund", 2), ("reserve", 2)]
    assert await drift(db) == []


async def test_a_completion_without_a_cancel_request_succeeds_and_charges(db: Database) -> None:
    user = await new_user(db, credits=5)
    await finished(db, "ok", user)
    done = await db.read(jobs.get, job_id="ok")
    assert done is not None and done.state == JobState.SUCCEEDED
    assert await credits_of(db, user) == (3, 0)
    assert len(await db.read(jobs.images_of, job_id="ok")) == 1


async def test_cancelling_a_users_jobs_refunds_the_queued_and_stops_the_running(db: Database) -> None:
    user, other = await new_user(db, credits=10), await new_user(db, credits=10)
    await submit(db, "running", user, cost=2)
    assert (await claim(db)) is not None
    await submit(db, "queued-1", user, cost=2)
    await submit(db, "queued-2", user, cost=3)
    await submit(db, "theirs", other, cost=1)

    cancelled = await db.write(jobs.cancel_all_of_user, user_id=user, now=1001.0)
    assert cancelled == ["queued-1", "queued-2"]
    assert await credits_of(db, user) == (10, 2)  # only the running job still holds credits
    running = await db.read(jobs.get, job_id="running")
    assert running is not None and running.cancel_requested
    # The running render completes before its worker sees the cancel: refunded all the same.
    assert await db.write(jobs.complete, job_id="running", attempt=1, images=[IMAGE], now=1002.0) == "cancelled"
    assert await credits_of(db, user) == (10, 0)
    theirs = await db.read(jobs.get, job_id="theirs")
    assert theirs is not None and theirs.state == JobState.QUEUED  # other users are untouched
    assert await drift(db) == []


async def test_a_banned_users_queued_job_is_never_claimed(db: Database) -> None:
    banned, other = await new_user(db, credits=10), await new_user(db, credits=10)
    await submit(db, "banned-job", banned, now=1000.0)
    await submit(db, "other-job", other, now=1001.0)
    # Banned by a route that does not cancel their queue (e.g. a direct database edit).
    await db.write(users.set_user_fields, user_id=banned, banned=True)
    job = await claim(db, now=1002.0)
    assert job is not None and job.id == "other-job"
    assert await claim(db, now=1003.0) is None


async def test_a_failed_try_is_retried_when_due_and_resumes_after_the_parts_sent(db: Database) -> None:
    user = await new_user(db)
    await finished(db, "j", user)
    assert await pending_ids(db, 1002.0) == ["j"]
    assert await db.write(delivery.retry_delivery, job_id="j", next_at=1010.0, now=1002.0) == 1
    assert await pending_ids(db, 1009.0) == []
    assert await pending_ids(db, 1010.0) == ["j"]
    assert await db.write(delivery.record_parts, job_id="j", parts=2, now=1010.0)
    assert not await db.write(delivery.record_parts, job_id="j", parts=1, now=1010.0)  # never backwards
    assert await db.write(delivery.retry_delivery, job_id="j", next_at=1030.0, now=1010.0) == 2
    job = await db.read(jobs.get, job_id="j")
    assert job is not None
    assert (job.delivery_parts, job.delivery_attempts, job.delivery_next_at) == (2, 2, 1030.0)
    assert job.delivery_failing_since == 1002.0  # the first failure starts the window; later ones keep it
    assert await db.write(delivery.mark_delivery, job_id="j", state=DeliveryState.DELIVERED, path="reply", now=1030)
    assert await db.write(delivery.retry_delivery, job_id="j", next_at=1050.0, now=1031.0) == 0  # no longer owed
    assert await db.read(delivery.pending_deliveries, platforms=["telegram"]) == []


async def test_giving_up_refunds_a_charged_result_exactly_once(db: Database) -> None:
    user = await new_user(db, credits=10)
    await finished(db, "lost", user, cost=2)
    assert await credits_of(db, user) == (8, 0)
    assert await db.write(delivery.give_up, job_id="lost", now=2000.0)
    assert not await db.write(delivery.give_up, job_id="lost", now=2001.0)
    assert not await db.write(
        delivery.mark_delivery, job_id="lost", state=DeliveryState.DELIVERED, path="reply", now=2002.0
    )
    job = await db.read(jobs.get, job_id="lost")
    assert job is not None and (job.state, job.delivery_state) == ("succeeded", "undeliverable")
    assert await credits_of(db, user) == (10, 0)
    assert await db.read(ledger_of, job_id="lost") == [("commit", 2), ("refund", 2), ("reserve", 2)]
    assert await drift(db) == []


async def test_giving_up_on_a_failure_notice_refunds_nothing_twice(db: Database) -> None:
    user = await new_user(db, credits=10)
    await submit(db, "failed", user, cost=2)
    assert await claim(db) is not None
    assert await db.write(jobs.fail, job_id="failed", attempt=1, reason="no_face", now=1001.0)
    assert await db.write(delivery.give_up, job_id="failed", now=1002.0)
    assert await credits_of(db, user) == (10, 0)
    assert await db.read(ledger_of, job_id="failed") == [("refund", 2), ("reserve", 2)]
    assert await drift(db) == []


async def test_the_books_still_balance_after_a_refunded_result_is_forgotten(db: Database) -> None:
    user = await new_user(db, credits=10)
    await finished(db, "gone", user, cost=2)
    await db.write(delivery.give_up, job_id="gone", now=2000.0)
    assert await db.write(history.forget, user_id=user) is not None
    assert await db.read(jobs.get, job_id="gone") is None
    assert await credits_of(db, user) == (10, 0)
    assert await drift(db) == []  # the ledger alone shows the refund followed a charge


def _migrate(*, session: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = session
    command.upgrade(config, revision)


async def test_upgrading_keeps_owed_results_owed_from_their_first_message(store_target: StoreTarget) -> None:
    db = store_target.open()
    try:
        await db.write(_migrate, revision="0002")
        # Written as revision 0002's code would: today's user queries read columns added later.
        user = await db.write(
            lambda session: session.execute(
                sa.text(
                    "INSERT INTO users (platform, platform_user_id, display_name, tier, banned, ban_reason,"
                    " unlimited, credits, reserved, running, day, day_jobs, last_vfinish, created_at) VALUES"
                    " ('telegram', '1', '', 'free', false, '', false, 0, 0, 0, '', 0, 0, 1) RETURNING id"
                )
            ).scalar_one()
        )
        await db.write(
            lambda session: session.execute(
                sa.text(
                    "INSERT INTO jobs (id, user_id, kind, state, params, face_keys, route, pinned, attempt,"
                    " max_attempts, fair_key, run_after, cancel_requested, cost, spend_usd, reply_target,"
                    " delivery_state, delivery_attempts, expired, created_at, updated_at, finished_at) VALUES"
                    " ('old', :user, 'imagine', 'failed', '{}', '[]', '[]', false, 1, 3, 0, 0, false, 0, 0,"
                    " '{}', 'pending', 3, false, 1, 1, 1)"
                ),
                {"user": user},
            )
        )
        await db.upgrade()
        job = await db.read(jobs.get, job_id="old")
        assert job is not None
        assert (job.delivery_parts, job.delivery_next_at, job.delivery_failing_since) == (0, None, None)
        assert await pending_ids(db, 2.0) == ["old"]
    finally:
        await db.dispose()
