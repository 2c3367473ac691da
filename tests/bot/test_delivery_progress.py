"""Progress edits keep nothing for jobs that finish out of this process's sight."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from bot.frontend import FrontEnd
from bot.progress import ProgressEdits
from bot.service.results import JobTarget, Results
from engine.events import JobProgress, ProgressHub, ProgressKind


class Targets:
    """Stands in for ``Results.progress_target``: jobs listed in ``running`` still run."""

    def __init__(self) -> None:
        self.running: set[str] = set()

    async def progress_target(self, job_id: str) -> JobTarget | None:
        return JobTarget(job_id, {"platform": "test"}) if job_id in self.running else None


class Edits:
    platform = "test"

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def parse_target(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        return data

    async def show_progress(self, job_id: str, target: Any, text: str) -> None:
        self.shown.append((job_id, text))


def rendering(job_id: str, fraction: float) -> JobProgress:
    return JobProgress(job_id, ProgressKind.RENDERING, backend="b", fraction=fraction)


async def test_a_job_gone_quiet_is_dropped_and_one_found_finished_is_dropped_at_once() -> None:
    now = [0.0]
    hub, targets, edits = ProgressHub(), Targets(), Edits()
    progress = ProgressEdits(
        cast(Results, targets),
        {"test": cast(FrontEnd, edits)},
        hub,
        interval_s=0.0,
        quiet_s=600.0,
        clock=lambda: now[0],
    )
    try:
        targets.running = {"here", "elsewhere"}
        hub.publish(rendering("elsewhere", 0.2))  # its worker is another process: no "finished" will come
        hub.publish(rendering("here", 0.2))
        await asyncio.sleep(0.01)
        assert sorted(job for job, _text in edits.shown) == ["elsewhere", "here"]
        assert progress.tracked == {"here", "elsewhere"}

        now[0] = 300.0
        hub.publish(rendering("here", 0.5))
        await asyncio.sleep(0.01)
        assert progress.tracked == {"here", "elsewhere"}  # quiet for 5 minutes only

        now[0] = 900.0
        hub.publish(rendering("here", 0.7))
        await asyncio.sleep(0.01)
        assert progress.tracked == {"here"}  # quiet for 15 minutes: it finished where we could not see

        targets.running = set()  # finished elsewhere; this process sees it at its next edit
        hub.publish(rendering("here", 0.9))
        await asyncio.sleep(0.01)
        assert progress.tracked == set()
    finally:
        progress.close()
