"""Logs of a running service: structured lines, the job id on job lines, and never a token or key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.bot.telegram.stack import face_photo
from tests.bot.test_cli_admin import LIKENESS
from tests.fakes import fal
from tests.fakes.fal import FalScript
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_service_logs_carry_job_ids_and_no_secrets(tmp_path: Path, fmt: str) -> None:
    async with FakeTelegram() as telegram, fal.start_fal() as fake_fal:
        fake_fal.script = FalScript(queue_ticks=0, run_ticks=0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        env.update(
            {
                "LIKENESS_DATA_DIR": str(tmp_path / "data"),
                "LIKENESS_ROUTE": "fal-flux-pulid",
                "LIKENESS_FAL__KEY": fal.KEY,
                "LIKENESS_FAL__BASE_URL": fake_fal.url,
                "LIKENESS_TELEGRAM__TOKEN": telegram.token,
                "LIKENESS_TELEGRAM__BASE_URL": telegram.base_url,
                "LIKENESS_TELEGRAM__BASE_FILE_URL": telegram.base_file_url,
                "LIKENESS_METRICS__ADDRESS": "",
                "LIKENESS_LOG__FORMAT": fmt,
                "LIKENESS_LOG__LEVEL": "DEBUG",
                # Plain colour photos stand in for faces: no face judge, no privacy notice to agree to.
                "LIKENESS_JUDGE__ENABLED": "false",
                "LIKENESS_PRIVACY__CONSENT": "false",
            }
        )
        log_path = tmp_path / "service.log"
        with log_path.open("wb") as handle:
            process = await asyncio.create_subprocess_exec(LIKENESS, "run", env=env, stdout=handle, stderr=handle)
        try:
            user = telegram.user("Ann")
            chat = telegram.private_chat(user)
            await telegram.wait_for(lambda: telegram.waiting_polls > 0, timeout=30)
            telegram.send_photo(user, chat, face_photo(), caption="a lighthouse")
            await telegram.wait_for(lambda: any(m.photo for m in telegram.messages(chat)), timeout=30)
            telegram.send_photo(user, chat, b"not an image at all", caption="x", dimensions=(400, 400))
            await telegram.wait_for(lambda: any("JPEG, PNG" in (m.text or "") for m in telegram.messages(chat)), 30)
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
    text = log_path.read_text()
    for secret in (telegram.token, fal.KEY, telegram.token.split(":")[1]):
        assert secret not in text
    job_id = f"tg:{chat.id}:1"
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records and all({"time", "level", "logger", "message"} <= record.keys() for record in records)
        job_lines = [r for r in records if r["logger"].startswith(("engine.dispatch", "bot.delivery"))]
        assert job_lines and all(r.get("job_id") == job_id for r in job_lines)
    else:
        job_lines = [line for line in text.splitlines() if "engine.dispatch" in line or "bot.delivery" in line]
        assert job_lines and all(f"job_id={job_id}" in line for line in job_lines)
