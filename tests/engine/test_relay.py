"""Progress across processes on PostgreSQL: LISTEN/NOTIFY carries a hub's events to another process's hub,
milestones at once and step progress coalesced, and wakes workers when a job is queued."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from engine.events import JobProgress, ProgressHub, ProgressKind, ProgressRelay
from storage import notify
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres


def _notifier(namespace: str) -> notify.PgNotifier:
    return notify.PgNotifier(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"), namespace=namespace)


async def test_progress_crosses_processes_coalesced_and_without_echo() -> None:
    namespace = f"t_{uuid.uuid4().hex[:8]}"
    worker_hub, bot_hub, other_hub = ProgressHub(), ProgressHub(), ProgressHub()
    worker_notifier, bot_notifier, other_notifier = (_notifier(namespace), _notifier(namespace), _notifier("other"))
    worker = ProgressRelay(worker_hub, worker_notifier, origin="worker", coalesce_s=0.2)
    bot = ProgressRelay(bot_hub, bot_notifier, origin="bot")
    elsewhere = ProgressRelay(other_hub, other_notifier, origin="elsewhere")
    seen: list[JobProgress] = []
    finished = asyncio.Event()
    bot_hub.subscribe(lambda event: finished.set() if event.kind is ProgressKind.FINISHED else None)
    echoed: list[JobProgress] = []
    bot_hub.subscribe(seen.append)
    worker_hub.subscribe(echoed.append)
    strangers: list[JobProgress] = []
    other_hub.subscribe(strangers.append)
    woken: list[str] = []
    worker_notifier.listen(notify.JOBS, woken.append)
    for notifier in (worker_notifier, bot_notifier, other_notifier):
        await notifier.start()
        assert notifier.connected
    for relay in (worker, bot, elsewhere):
        relay.start()
    try:
        await bot_notifier.send(notify.JOBS)
        worker_hub.publish(JobProgress("j1", ProgressKind.STARTED))
        worker_hub.publish(JobProgress("j1", ProgressKind.BACKEND, "local"))
        for step in range(1, 11):
            worker_hub.publish(JobProgress("j1", ProgressKind.RENDERING, "local", fraction=step / 10))
        await asyncio.sleep(0.4)
        worker_hub.publish(JobProgress("j1", ProgressKind.FINISHED, "local"))
        await asyncio.wait_for(finished.wait(), 5)
    finally:
        for relay in (worker, bot, elsewhere):
            await relay.close()
        for notifier in (worker_notifier, bot_notifier, other_notifier):
            await notifier.close()
    assert [(e.kind, e.fraction) for e in seen] == [
        (ProgressKind.STARTED, None),
        (ProgressKind.BACKEND, None),
        (ProgressKind.RENDERING, 1.0),  # ten steps within the coalescing window: the latest only
        (ProgressKind.FINISHED, None),
    ]
    assert seen[1].backend == "local"
    assert len(echoed) == 13  # the worker's own hub saw its events once each: no echo came back in
    assert strangers == []  # another deployment's namespace hears nothing
    assert woken == [""]
