"""The fault soak on PostgreSQL: 1,000 jobs through real worker processes SIGKILLed every few seconds and a real
`likeness run`, against provider and Telegram fakes injecting faults at random; the books must balance."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL
from tests.ops.fault_soak import SoakConfig, soak

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.timeout(420)
async def test_a_thousand_jobs_survive_provider_chat_and_worker_faults(tmp_path: Path) -> None:
    figures = await soak(SoakConfig(jobs=1000, within_s=300), POSTGRES_URL, tmp_path)
    assert figures.kills >= 5 and figures.worker_exits == 0
    assert figures.refused_submits > 0 and figures.provider_faults > 0 and figures.chat_bursts > 0
    assert figures.by_state.get("succeeded", 0) >= 0.8 * figures.jobs
