"""A user's own account: welcome, history pages, quota, and forgetting everything on request."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button
from storage import identities, jobs
from tests.bot.service.conftest import ADMIN, ANN, BOB, WELCOME, ChatTarget, World
from tests.bot.service.conftest import face_photo as photo


def render(event: str, prompt: str) -> ImagineInput:
    return ImagineInput(event_id=event, text=prompt, reply_target=ChatTarget("c1"), photos=(photo(),))


async def test_the_welcome_counts_the_credits_a_new_user_starts_with(world: World) -> None:
    assert (await world.service.account.start(ANN)).text == messages.welcome(WELCOME)
    await world.service.imagine.submit(ANN, render("e1", "a knight"))
    assert (await world.service.account.start(ANN)).text == messages.welcome(WELCOME - 1)
    assert world.service.account.help().text == messages.HELP


async def test_history_pages_newest_first_with_buttons_between_pages(world: World) -> None:
    account = world.service.account
    assert (await account.history(ANN)).text == messages.NO_HISTORY
    for n in range(6):
        await world.service.imagine.submit(ANN, render(f"e{n}", f"portrait number {n}"))
        await world.run_jobs()

    first = await account.history(ANN)
    assert "page 1 of 2" in first.text and "portrait number 5" in first.text and "portrait number 0" not in first.text
    assert first.buttons == (Button("Older ▶", Action.HISTORY, "1"),)
    second = await account.history(ANN, 1)
    assert "page 2 of 2" in second.text and "portrait number 0" in second.text
    assert "seed 4242 · scripted · succeeded" in second.text
    assert second.buttons == (Button("◀ Newer", Action.HISTORY, "0"),)
    assert (await account.history(BOB)).text == messages.NO_HISTORY


async def test_quota_shows_credits_held_jobs_today_and_the_limit_in_force(world: World) -> None:
    account = world.service.account
    await world.service.imagine.submit(ANN, render("e1", "a knight"))
    assert (await account.quota(ANN)).text == messages.quota_text(
        available=WELCOME - 1, reserved=1, used_today=1, daily_limit=20, per_image=1, unlimited=False
    )
    await world.service.admin.limit(ADMIN, "default", "7")
    assert "Jobs today: 1 of 7" in (await account.quota(ANN)).text
    await world.service.admin.limit(ADMIN, ANN.user_id, "3")
    assert "Jobs today: 1 of 3" in (await account.quota(ANN)).text
    assert "Jobs today: 0 of 7" in (await account.quota(BOB)).text


async def test_forget_asks_first_refuses_while_a_job_runs_then_deletes_everything(world: World) -> None:
    account = world.service.account
    confirm = account.forget(ANN)
    assert confirm.text == messages.FORGET_CONFIRM
    assert [b.data for b in confirm.buttons] == ["fg:yes", "fg:no"]
    assert (await account.forget_confirmed(ANN, False)).text == messages.FORGET_KEPT

    await world.service.faces.save(ANN, "me", (photo(color="tan"),))
    await world.service.imagine.submit(ANN, render("e1", "a knight"))
    with pytest.raises(UserError) as busy:
        await account.forget_confirmed(ANN, True)
    assert busy.value.message == messages.FORGET_BUSY

    await world.run_jobs()
    job = await world.job("e1")
    user = await world.user(ANN)
    identity = await world.db.read(identities.find, user_id=user.id or 0, name="me")
    assert identity is not None
    images = await world.db.read(jobs.images_of, job_id="e1")
    keys = [*job.face_keys, *identity.photo_keys, *(image.blob_key for image in images)]
    assert len(keys) == 3 and all([await world.blobs.exists(key) for key in keys])

    receipt = messages.forgotten(identities=1, photos=2, embeddings=0, results=1, history=1)
    assert (await account.forget_confirmed(ANN, True)).text == receipt
    assert (await account.history(ANN)).text == messages.NO_HISTORY
    assert await world.service.faces.names(ANN) == []
    assert not any([await world.blobs.exists(key) for key in keys])
    assert await world.db.read(jobs.get, job_id="e1") is None
    user = await world.user(ANN)
    assert user.credits == WELCOME - 1  # the balance stays: it is the operator's account
