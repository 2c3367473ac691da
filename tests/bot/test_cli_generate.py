"""`likeness generate` as an operator runs it: the installed entry point against each fake provider."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from storage import jobs, reconcile, users
from storage.db import Database
from storage.states import JobState
from tests.bot.test_cli_admin import LIKENESS
from tests.fakes import fal, replicate, segmind, wavespeed
from tests.fakes.fal import FakeFal, FalScript
from tests.fakes.providers_common import tiny_image
from tests.fakes.replicate import FakeReplicate, ReplicateScript
from tests.fakes.segmind import FakeSegmind
from tests.fakes.wavespeed import FakeWaveSpeed, WaveSpeedScript


@dataclass
class Fakes:
    fal: FakeFal
    replicate: FakeReplicate
    wavespeed: FakeWaveSpeed
    segmind: FakeSegmind

    def env(self) -> dict[str, str]:
        return {
            # Plain colour photos stand in for faces here; test_cli_generate_faces.py checks real ones.
            "LIKENESS_JUDGE__ENABLED": "false",
            "LIKENESS_FAL__KEY": fal.KEY,
            "LIKENESS_FAL__BASE_URL": self.fal.url,
            "LIKENESS_REPLICATE__TOKEN": replicate.TOKEN,
            "LIKENESS_REPLICATE__BASE_URL": self.replicate.url,
            "LIKENESS_REPLICATE__VERSION": replicate.VERSION,
            "LIKENESS_WAVESPEED__KEY": wavespeed.KEY,
            "LIKENESS_WAVESPEED__BASE_URL": self.wavespeed.url,
            "LIKENESS_SEGMIND__KEY": segmind.KEY,
            "LIKENESS_SEGMIND__BASE_URL": self.segmind.url,
        }


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    async with AsyncExitStack() as stack:
        found = Fakes(
            await stack.enter_async_context(fal.start_fal()),
            await stack.enter_async_context(replicate.start_replicate()),
            await stack.enter_async_context(wavespeed.start_wavespeed()),
            await stack.enter_async_context(segmind.start_segmind()),
        )
        # Answer at the first poll: the CLI polls on real time.
        found.fal.script = FalScript(queue_ticks=0, run_ticks=0)
        found.replicate.script = ReplicateScript(starting_ticks=0, processing_ticks=0)
        found.wavespeed.script = WaveSpeedScript(created_ticks=0, processing_ticks=0)
        yield found


async def likeness(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    clean.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), "LIKENESS_METRICS__ADDRESS": "", **env})
    process = await asyncio.create_subprocess_exec(
        LIKENESS,
        *args,
        cwd=tmp_path,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def face(tmp_path: Path) -> Path:
    path = tmp_path / "face.jpg"
    path.write_bytes(tiny_image("jpeg", (320, 400)))
    return path


@pytest.mark.parametrize(
    "backend",
    ["fal-flux-pulid", "fal-pulid", "replicate-flux-pulid", "wavespeed-flux-pulid", "segmind-flux-pulid"],
)
async def test_generate_writes_the_outputs_and_prints_only_their_paths(
    tmp_path: Path, fakes: Fakes, backend: str
) -> None:
    code, out, err = await likeness(
        tmp_path, fakes.env(), "generate", "--face", str(face(tmp_path)), "--prompt", "a lighthouse keeper",
        "--backend", backend, "--out", str(tmp_path / "out"), "--seed", "7",
    )  # fmt: skip
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 1 and paths[0].parent == tmp_path / "out"
    assert paths[0].name.startswith("cli-") and paths[0].name.split(".")[0].endswith("-1")
    with Image.open(paths[0]) as image:
        assert image.width > 0
    assert f"rendering on {backend}" in err
    submitted = {
        "fal-flux-pulid": fakes.fal.requests("submit"),
        "fal-pulid": fakes.fal.requests("submit"),
        "replicate-flux-pulid": fakes.replicate.requests("create"),
        "wavespeed-flux-pulid": fakes.wavespeed.requests("submit"),
        "segmind-flux-pulid": fakes.segmind.requests("generate"),
    }[backend]
    assert len(submitted) == 1


async def test_generate_mode_reaches_sdxl_pulid(tmp_path: Path, fakes: Fakes) -> None:
    code, _out, err = await likeness(
        tmp_path, fakes.env(), "generate", "--face", str(face(tmp_path)), "--prompt", "a sketch",
        "--backend", "fal-pulid", "--out", str(tmp_path / "out"), "--mode", "extreme style",
    )  # fmt: skip
    assert code == 0, err
    [submit] = fakes.fal.requests("submit")
    assert submit.json()["mode"] == "extreme style"


async def test_generate_refuses_out_of_range_parameters_with_the_allowed_range(tmp_path: Path, fakes: Fakes) -> None:
    code, out, err = await likeness(
        tmp_path, fakes.env(), "generate", "--face", str(face(tmp_path)), "--prompt", "x",
        "--backend", "replicate-flux-pulid", "--steps", "40",
    )  # fmt: skip
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "steps 40 on replicate-flux-pulid: allowed 1–20" in err
    assert fakes.replicate.requests() == []


async def test_generate_failure_exits_non_zero_with_one_line(tmp_path: Path, fakes: Fakes) -> None:
    fakes.fal.locked = True
    code, out, err = await likeness(
        tmp_path,
        fakes.env(),
        "generate",
        "--face",
        str(face(tmp_path)),
        "--prompt",
        "x",
        "--backend",
        "fal-flux-pulid",
    )
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("likeness: job cli-") and "out_of_credit" in last
    assert "Traceback" not in err and fal.KEY not in err


async def test_generate_refuses_a_file_that_is_not_a_photo(tmp_path: Path, fakes: Fakes) -> None:
    fake_photo = tmp_path / "face.jpg"
    fake_photo.write_text("not an image")
    code, _, err = await likeness(tmp_path, fakes.env(), "generate", "--face", str(fake_photo), "--prompt", "x")
    assert code == 1 and "JPEG, PNG or WebP" in err


async def test_generate_runs_only_its_own_job_and_leaves_the_queue_alone(tmp_path: Path, fakes: Fakes) -> None:
    # A chat user's job waits in the same store (the service is down, or busy elsewhere).
    db = Database(f"sqlite:///{(tmp_path / 'data' / 'likeness.db').resolve()}")
    await db.upgrade()
    try:
        user = await db.write(
            users.ensure_user, platform="telegram", platform_user_id="42", now=time.time() - 60, welcome_credits=5
        )
        await db.write(
            jobs.submit,
            job=jobs.NewJob(
                id="tg-42-1",
                user_id=user.id or 0,
                params={"prompt": "a user's portrait"},
                cost=1,
                route=["fal-flux-pulid"],
            ),
            now=time.time() - 60,  # queued first: the fairest job in the queue
            daily_jobs_default=20,
        )
        code, out, err = await likeness(
            tmp_path, fakes.env(), "generate", "--face", str(face(tmp_path)), "--prompt", "a lighthouse keeper",
            "--backend", "fal-flux-pulid", "--out", str(tmp_path / "out"),
        )  # fmt: skip
        assert code == 0, err
        assert len(out.splitlines()) == 1
        assert len(fakes.fal.requests("submit")) == 1  # the operator's job only
        queued = await db.read(jobs.get, job_id="tg-42-1")
        assert queued is not None
        assert (queued.state, queued.attempt, queued.lease_owner) == (JobState.QUEUED, 0, None)
        mine = await db.read(users.get_user, user_id=user.id or 0)
        assert mine is not None and (mine.credits, mine.reserved, mine.running) == (5, 1, 0)
        assert await db.read(reconcile.find_drift) == []
    finally:
        await db.dispose()
