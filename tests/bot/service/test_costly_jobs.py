"""Costly jobs wait for their user's confirmation; one-image jobs go straight through; a confirmation charges once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button
from bot.service.use_cases import LikenessService
from storage import pending
from tests.bot.service.conftest import ANN, BOB, WELCOME, ChatTarget, World, face_photo, world_settings


def asked(event: str, prompt: str = "a knight") -> ImagineInput:
    return ImagineInput(event, prompt, ChatTarget("c1"), photos=(face_photo(),))


async def test_a_one_image_job_is_queued_at_once(world: World) -> None:
    submitted = await world.service.imagine.submit(ANN, asked("e1"))
    assert not submitted.pending
    assert (await world.user(ANN)).reserved == 1


async def test_a_job_of_several_images_is_confirmed_once_and_charged_once(world: World) -> None:
    submitted = await world.service.imagine.submit(ANN, asked("e1", "a knight --n 3"))
    assert submitted.pending and submitted.job_id == "e1"
    assert submitted.reply.text == messages.confirm_cost(3, WELCOME, 3)
    assert submitted.reply.buttons == (
        Button(messages.CONFIRM, Action.CONFIRM, "e1"),
        Button(messages.DECLINE, Action.DECLINE, "e1"),
    )
    assert (await world.user(ANN)).reserved == 0  # nothing held while the user decides
    assert world.notified == []

    first = await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1", "status-7"))
    again = await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1", "status-7"))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (await world.user(ANN)).reserved == 3 and world.notified == [True]
    job = await world.job("e1")
    assert job.reply_target == {"platform": "test", "chat": "c1", "status": "status-7"}
    await world.run_jobs()
    assert await world.ledger("e1") == [("commit", 3), ("reserve", 3)]
    assert (await world.user(ANN)).credits == WELCOME - 3
    # A press after the job ran finds it: still one job, one charge.
    late = await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))
    assert late.duplicate and await world.ledger("e1") == [("commit", 3), ("reserve", 3)]


async def test_a_declined_job_costs_nothing_and_its_photos_go(world: World) -> None:
    submitted = await world.service.imagine.submit(ANN, asked("e1", "a knight --n 2"))
    waiting = await world.db.read(pending.get, job_id=submitted.job_id)
    assert waiting is not None
    [photo_key] = waiting.job["face_keys"]
    assert await world.blobs.get(photo_key)
    assert (await world.service.imagine.decline(ANN, "e1")).text == messages.DECLINED
    with pytest.raises(KeyError):
        await world.blobs.get(photo_key)
    with pytest.raises(UserError) as gone:
        await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))
    assert gone.value.message == messages.CONFIRM_GONE
    assert (await world.user(ANN)).credits == WELCOME and (await world.user(ANN)).reserved == 0


async def test_only_the_asker_can_confirm(world: World) -> None:
    await world.service.imagine.submit(ANN, asked("e1", "a knight --n 2"))
    with pytest.raises(UserError) as refused:
        await world.service.imagine.confirm(BOB, "e1", ChatTarget("c2"))
    assert refused.value.message == messages.CONFIRM_GONE
    assert (await world.service.imagine.decline(BOB, "e1")).text == messages.DECLINED
    assert await world.db.read(pending.get, job_id="e1") is not None  # Bob's decline touched nothing
    assert not (await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))).duplicate


async def test_a_confirmation_without_enough_credits_is_refused_and_can_be_retried(world: World) -> None:
    await world.service.imagine.submit(ANN, asked("e1", "a knight --n 4"))
    await world.service.imagine.submit(ANN, asked("e2", "a duke --n 4"))
    await world.service.imagine.submit(ANN, asked("e3", "an earl --n 4"))
    await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))
    await world.service.imagine.confirm(ANN, "e2", ChatTarget("c1"))
    with pytest.raises(UserError) as short:
        await world.service.imagine.confirm(ANN, "e3", ChatTarget("c1"))
    assert short.value.message.startswith("Not enough credits")
    assert await world.db.read(pending.get, job_id="e3") is not None


async def test_above_the_confirmation_threshold_one_image_asks_too(world: World, tmp_path: Path) -> None:
    settings = world_settings(tmp_path, credits={"new_user": 20, "per_image": 3, "daily_jobs": 20, "confirm_above": 2})
    service = LikenessService(db=world.db, blobs=world.blobs, router=world.router, settings=settings)
    submitted = await service.imagine.submit(ANN, asked("e1"))
    assert submitted.pending and submitted.reply.text == messages.confirm_cost(3, 20, 1)
