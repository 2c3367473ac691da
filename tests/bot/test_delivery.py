"""The delivery loop on a real store (SQLite and PostgreSQL) and a virtual clock, with a scripted front end:
retries with growing waits that survive a restart, permanent refusals, the retry window, refunds, and
replies of several messages resumed where they stopped."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bot import messages
from bot.delivery import Delivery
from bot.frontend import DeliveryDeferred, DeliveryParts, Undeliverable
from bot.service.replies import Reply
from bot.service.results import Results
from bot.settings import DeliverySettings
from engine.events import ProgressHub
from storage import delivery, history, jobs, reconcile
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.models import Job
from tests.bot.service.scripted import tiny_png
from tests.storage.ledger_helpers import claim, credits_of, new_user, submit
from tests.virtual_clock import VirtualClock

START = 1_700_000_000.0
SETTINGS = DeliverySettings(retry_window_s=6 * 3600, retry_base_s=5, retry_cap_s=900)


class ScriptedFrontEnd:
    """A front end whose reply is ``parts`` messages; ``script`` fails chosen messages, in order."""

    platform = "telegram"

    def __init__(self, parts: int = 1) -> None:
        self.parts = parts
        self.script: deque[tuple[int, BaseException]] = deque()  # (message index, error raised posting it)
        self.posted: list[tuple[str, int]] = []
        self.tries = 0

    def fail(self, index: int, error: BaseException, times: int = 1) -> None:
        self.script.extend((index, error) for _ in range(times))

    def parse_target(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return dict(data)

    async def deliver(self, job_id: str, target: Any, reply: Reply, parts: DeliveryParts | None = None) -> str:
        self.tries += 1
        assert reply.images  # the stored result itself is what goes out
        await (parts or DeliveryParts()).send([functools.partial(self._post, job_id, i) for i in range(self.parts)])
        return "reply"

    async def _post(self, job_id: str, index: int) -> None:
        if self.script and self.script[0][0] == index:
            raise self.script.popleft()[1]
        self.posted.append((job_id, index))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def show_progress(self, job_id: str, target: Any, text: str) -> None: ...


class Rig:
    def __init__(self, db: Database, blobs: LocalBlobStore, frontend: ScriptedFrontEnd) -> None:
        self.db, self.blobs, self.frontend = db, blobs, frontend
        self.clock = VirtualClock(START)
        self.results = Results(db=db, blobs=blobs, clock=self.clock.time)
        self.delivery = self.restart()

    def restart(self, settings: DeliverySettings = SETTINGS) -> Delivery:
        """A fresh delivery loop, as after a process restart: it knows only what the store holds."""
        self.delivery = Delivery(
            self.results, {"telegram": self.frontend}, ProgressHub(), settings=settings, clock=self.clock
        )
        return self.delivery

    async def rendered(self, job_id: str, *, credits: int = 10, cost: int = 2) -> int:
        """A user whose job rendered (and was charged); its result is owed to the chat."""
        user = await new_user(self.db, credits=credits, now=START)
        await submit(self.db, job_id, user, cost=cost, now=START)
        target = {"platform": "telegram", "chat": 1}
        await self.db.write(delivery.set_reply_target, job_id=job_id, reply_target=target, now=START)
        job = await claim(self.db, now=START)
        assert job is not None and job.id == job_id
        key = await self.blobs.put(tiny_png())
        image = jobs.NewImage(0, key, key, "image/png", 100, 8, 8)
        assert await self.db.write(jobs.complete, job_id=job_id, attempt=1, images=[image], now=START)
        return user

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None
        return found

    async def wait_until_due(self, job_id: str) -> float:
        """Move the clock to the job's next try; returns the wait."""
        job = await self.job(job_id)
        assert job.delivery_next_at is not None
        wait = job.delivery_next_at - self.clock.now
        self.clock.now = job.delivery_next_at
        return wait


@pytest.fixture
async def rig(db: Database, tmp_path: Path) -> Rig:
    return Rig(db, LocalBlobStore(tmp_path / "blobs"), ScriptedFrontEnd())


async def test_an_outage_longer_than_eight_tries_is_waited_out_with_growing_waits(rig: Rig) -> None:
    user = await rig.rendered("j")
    rig.frontend.fail(0, DeliveryDeferred("telegram unavailable: Bad Gateway"), times=12)
    waits = []
    for _ in range(12):
        assert await rig.delivery.deliver_pending() == 1
        assert await rig.delivery.deliver_pending() == 0  # not due again before its time
        waits.append(await rig.wait_until_due("j"))
    # Equal jitter at 0.5: three quarters of 5 s doubling, up to the 15 minute cap.
    assert waits == [3.75, 7.5, 15, 30, 60, 120, 240, 480, 675, 675, 675, 675]
    assert await rig.delivery.deliver_pending() == 1
    job = await rig.job("j")
    assert (job.delivery_state, job.delivery_path, job.delivery_attempts) == ("delivered", "reply", 12)
    assert rig.frontend.posted == [("j", 0)]
    assert await credits_of(rig.db, user) == (8, 0)  # charged once
    assert await rig.db.read(reconcile.find_drift) == []


async def test_retries_survive_a_restart(rig: Rig) -> None:
    await rig.rendered("j")
    rig.frontend.fail(0, RuntimeError("connection reset"))  # unclassified errors are retried too
    await rig.delivery.deliver_pending()
    rig.restart()
    assert await rig.delivery.deliver_pending() == 0  # the wait is on the job row, not in the old process
    await rig.wait_until_due("j")
    assert await rig.delivery.deliver_pending() == 1
    assert (await rig.job("j")).delivery_state == "delivered"


async def test_a_platforms_retry_after_is_a_lower_bound(rig: Rig) -> None:
    await rig.rendered("j")
    rig.frontend.fail(0, DeliveryDeferred("flood control", retry_after_s=120))
    await rig.delivery.deliver_pending()
    assert await rig.wait_until_due("j") == 120


async def test_a_blocked_bot_ends_at_once_refunded_and_history_says_so(rig: Rig) -> None:
    user = await rig.rendered("j")
    rig.frontend.fail(0, Undeliverable("telegram refused: Forbidden: bot was blocked by the user"))
    await rig.delivery.deliver_pending()
    job = await rig.job("j")
    assert (job.state, job.delivery_state, job.delivery_attempts) == ("succeeded", "undeliverable", 0)
    assert await credits_of(rig.db, user) == (10, 0)
    assert await rig.db.read(reconcile.find_drift) == []
    found, _total = await rig.db.read(history.page, user_id=user, offset=0, limit=5)
    [job] = found
    assert messages.history_line("today", job).endswith("succeeded, " + messages.NOT_DELIVERED)
    rig.frontend.fail(0, RuntimeError("never asked again"))
    assert await rig.delivery.deliver_pending() == 0


async def test_a_result_still_failing_when_the_window_ends_is_refunded(rig: Rig) -> None:
    user = await rig.rendered("j")
    rig.restart(DeliverySettings(retry_window_s=3600, retry_base_s=5, retry_cap_s=900))
    rig.frontend.fail(0, DeliveryDeferred("telegram unavailable: Bad Gateway"), times=1000)
    first_failure = rig.clock.now
    tries = 0
    while (await rig.job("j")).delivery_state == "pending":
        assert await rig.delivery.deliver_pending() == 1
        tries += 1
        if (await rig.job("j")).delivery_state == "pending":
            await rig.wait_until_due("j")
    # Waits of 3.75, 7.5, ... 675 s: the twelfth is cut short to end at the window, where the last try fails.
    assert tries == 13 and rig.clock.now == first_failure + 3600
    job = await rig.job("j")
    assert (job.delivery_state, job.delivery_attempts) == ("undeliverable", 12)
    assert await credits_of(rig.db, user) == (10, 0)
    assert await rig.db.read(reconcile.find_drift) == []


async def test_a_reply_that_failed_half_way_resumes_with_the_messages_not_yet_sent(rig: Rig) -> None:
    rig.frontend.parts = 3
    await rig.rendered("j")
    rig.frontend.fail(1, DeliveryDeferred("telegram unavailable: Bad Gateway"))
    await rig.delivery.deliver_pending()
    assert rig.frontend.posted == [("j", 0)]
    assert (await rig.job("j")).delivery_parts == 1
    rig.restart()
    await rig.wait_until_due("j")
    await rig.delivery.deliver_pending()
    assert rig.frontend.posted == [("j", 0), ("j", 1), ("j", 2)]  # the first message once
    job = await rig.job("j")
    assert (job.delivery_state, job.delivery_parts) == ("delivered", 3)


async def test_a_pass_waits_no_longer_than_the_soonest_retry(rig: Rig) -> None:
    await rig.rendered("j")
    rig.frontend.fail(0, DeliveryDeferred("down"))
    await rig.delivery.deliver_pending()
    assert rig.delivery._pause() == pytest.approx(2.0)  # poll interval: the retry is 3.75 s away
    rig.clock.advance(3)
    assert rig.delivery._pause() == pytest.approx(0.75)
