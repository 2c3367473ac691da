"""Imagine, reroll, vary and cancel: what gets queued, charged, refused and said."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from bot import messages
from bot.errors import UserError
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button
from engine.capabilities import Range
from engine.errors import ContentPolicyError
from storage import identities
from tests.bot.service.conftest import (
    ADMIN,
    ANN,
    BOB,
    ELSEWHERE,
    GENERAL,
    MEMBER,
    MODERATOR,
    WELCOME,
    ChatTarget,
    World,
)
from tests.bot.service.conftest import face_photo as photo
from tests.bot.service.scripted import CAPABILITIES


def asked(event: str, text: str = "a knight in armour", **fields: object) -> ImagineInput:
    values: dict[str, object] = {"photos": (photo(),), "reply_target": ChatTarget("c1"), **fields}
    return ImagineInput(event_id=event, text=text, **values)  # type: ignore[arg-type]


async def test_a_photo_and_prompt_queue_one_job_and_reserve_its_cost(world: World) -> None:
    submitted = await world.service.imagine.submit(ANN, asked("e1", "a knight --ar 3:4 --seed 7 --no hats"))

    assert submitted.job_id == "e1" and not submitted.duplicate
    assert submitted.reply.text == messages.queued(1)
    assert submitted.reply.buttons == (Button("Cancel", Action.CANCEL, "e1"),)
    assert world.notified == [True]  # the dispatcher in this process looks at once
    job = await world.job("e1")
    assert job.state == "queued" and job.kind == "imagine" and job.cost == 1
    assert job.params["prompt"] == "a knight" and job.params["seed"] == 7
    assert job.params["negative_prompt"] == "hats" and (job.params["width"], job.params["height"]) == (880, 1184)
    assert job.reply_target == {"platform": "test", "chat": "c1", "status": None}
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (WELCOME, 1)
    assert await world.ledger("e1") == [("reserve", 1)]
    # The photo is stored as the intake made it: a re-encoded JPEG.
    [key] = job.face_keys
    with Image.open(io.BytesIO(await world.blobs.get(key))) as stored:
        assert stored.format == "JPEG" and stored.size == (400, 480)


async def test_the_same_event_twice_is_one_job_and_one_charge(world: World) -> None:
    first = await world.service.imagine.submit(ANN, asked("e1"))
    again = await world.service.imagine.submit(ANN, asked("e1"))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.job_id == "e1" and again.reply.text == messages.queued(1)
    assert (await world.user(ANN)).reserved == 1 and world.notified == [True]


async def test_structured_options_join_those_in_the_prompt(world: World) -> None:
    given = asked("e1", "a duke --steps 12", params={"seed": 99, "guidance": None, "num_images": 2})
    asked_first = await world.service.imagine.submit(ANN, given)
    assert asked_first.pending  # two images: the user confirms the cost first
    await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))
    job = await world.job("e1")
    assert (job.params["steps"], job.params["seed"], job.params["num_images"]) == (12, 99, 2)
    assert "guidance" not in job.params and job.cost == 2


async def test_without_a_photo_the_default_saved_face_is_used_or_a_named_one(world: World) -> None:
    with pytest.raises(UserError) as no_face:
        await world.service.imagine.submit(ANN, asked("e0", photos=()))
    assert no_face.value.message == messages.NO_FACE_YET

    await world.service.faces.save(ANN, "me", (photo(color="tan"),))
    await world.service.faces.save(ANN, "twin", (photo(color="peru"), photo(color="wheat")))
    await world.service.imagine.submit(ANN, asked("e1", photos=()))
    await world.service.imagine.submit(ANN, asked("e2", photos=(), face="me"))
    user = await world.user(ANN)
    twin = await world.db.read(identities.find, user_id=user.id or 0, name="twin")
    me = await world.db.read(identities.find, user_id=user.id or 0, name="me")
    assert twin is not None and me is not None
    assert (await world.job("e1")).face_keys == twin.photo_keys  # the latest saved face is the default
    assert (await world.job("e2")).face_keys == me.photo_keys

    with pytest.raises(UserError) as unknown:
        await world.service.imagine.submit(ANN, asked("e3", photos=(), face="nobody"))
    assert unknown.value.message == messages.NO_SUCH_FACE.format(name="nobody")


async def test_more_photos_than_one_face_takes_are_refused(world: World) -> None:
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, asked("e1", photos=(photo(),) * 5))
    assert refused.value.message == messages.TOO_MANY_PHOTOS.format(limit=4)


async def test_settings_outside_every_backend_are_refused_with_what_is_allowed(world: World) -> None:
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, asked("e1", "a knight --steps 90"))
    assert refused.value.message == "No backend can take these settings:\n• steps 90 on scripted: allowed 1–50"
    world.backend.down = "no key"
    with pytest.raises(UserError) as down:
        await world.service.imagine.submit(ANN, asked("e2"))
    assert down.value.message == messages.NO_BACKEND_UP
    assert (await world.user(ANN)).reserved == 0


async def test_quota_refusals_say_why_and_reserve_nothing(world: World) -> None:
    admin = world.service.admin
    await admin.grant(ADMIN, ANN.user_id, "-8")
    with pytest.raises(UserError) as short:
        await world.service.imagine.submit(ANN, asked("e1", "a crowd --n 4"))
    assert short.value.message == "Not enough credits: this needs 4, you have 2. Ask an admin for more."

    await admin.limit(ADMIN, ANN.user_id, "1")
    await world.service.imagine.submit(ANN, asked("e2"))
    with pytest.raises(UserError) as daily:
        await world.service.imagine.submit(ANN, asked("e3"))
    assert daily.value.message == "You've reached today's limit of 1 job. It resets at midnight UTC."

    await admin.ban(ADMIN, ANN.user_id, "spam")
    with pytest.raises(UserError) as banned:
        await world.service.imagine.submit(ANN, asked("e4"))
    assert banned.value.message == "You can't use this bot."
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (2, 0)  # the ban cancelled e2, queued, and refunded it
    assert (await world.job("e2")).state == "cancelled"


async def test_a_paused_scope_or_a_channel_outside_the_list_refuses_new_jobs(world: World) -> None:
    admin = world.service.admin
    await admin.pause(MODERATOR, "maintenance")
    with pytest.raises(UserError) as paused:
        await world.service.imagine.submit(MEMBER, asked("d1"))
    assert paused.value.message == messages.paused_for_users("maintenance")
    # A guild's pause is that guild's alone.
    await world.service.imagine.submit(ANN, asked("t1"))
    await admin.pause(MODERATOR, paused=False)

    await admin.channels(MODERATOR, "add", ELSEWHERE)
    with pytest.raises(UserError) as elsewhere:
        await world.service.imagine.submit(MEMBER, asked("d2"))
    assert elsewhere.value.message == messages.NOT_THIS_CHANNEL
    await admin.channels(MODERATOR, "add", GENERAL)
    assert (await world.service.imagine.submit(MEMBER, asked("d3"))).job_id == "d3"


async def test_the_status_message_is_remembered_with_the_job(world: World) -> None:
    target = ChatTarget("c1")
    await world.service.imagine.submit(ANN, asked("e1", reply_target=target))
    await world.service.imagine.attach_status("e1", replace(target, status="m7"))
    assert (await world.job("e1")).reply_target == {"platform": "test", "chat": "c1", "status": "m7"}


async def test_reroll_and_vary_render_a_finished_job_again_with_new_seeds(world: World) -> None:
    await world.service.imagine.submit(ANN, asked("e1", "a portrait --seed 5 --iw 1.0"))
    await world.run_jobs()
    parent = await world.job("e1")
    assert parent.state == "succeeded" and parent.seed == world.backend.seed

    reroll = await world.service.imagine.rerun(ANN, "e2", Action.REROLL, "e1", ChatTarget("c1"))
    vary = await world.service.imagine.rerun(ANN, "e3", Action.VARY, "e1", ChatTarget("c1"))
    assert not reroll.duplicate and not vary.duplicate
    rerolled, varied = await world.job("e2"), await world.job("e3")
    assert (rerolled.kind, rerolled.parent_id, varied.kind, varied.parent_id) == ("rr", "e1", "va", "e1")
    assert rerolled.face_keys == parent.face_keys and rerolled.params["prompt"] == "a portrait"
    # Vary keeps close to the parent: a seed a little past the one rendered, and an id weight nudged by 0.1
    # that stays inside the backend's range.
    assert 0 < varied.params["seed"] - int(world.backend.seed) < 1000
    weight = CAPABILITIES.limits["id_weight"]
    assert isinstance(weight, Range)
    assert varied.params["id_weight"] in (0.9, 1.1) and weight.contains(varied.params["id_weight"])
    assert (await world.user(ANN)).credits == WELCOME - 1  # the parent is paid; the two new jobs reserved

    again = await world.service.imagine.rerun(ANN, "e2", Action.REROLL, "e1", ChatTarget("c1"))
    assert again.duplicate and again.job_id == "e2"

    with pytest.raises(UserError) as not_theirs:
        await world.service.imagine.rerun(BOB, "e4", Action.REROLL, "e1", ChatTarget("c2"))
    assert not_theirs.value.message == messages.NOT_YOUR_JOB


async def test_cancel_refunds_a_queued_job_and_says_when_there_is_nothing(world: World) -> None:
    assert (await world.service.imagine.cancel(ANN)).text == messages.NOTHING_TO_CANCEL
    await world.service.imagine.submit(ANN, asked("e1"))
    with pytest.raises(UserError) as not_theirs:
        await world.service.imagine.cancel(BOB, "e1")
    assert not_theirs.value.message == messages.NOT_YOUR_JOB

    assert (await world.service.imagine.cancel(ANN)).text == messages.cancel_outcome("cancelled")
    job = await world.job("e1")
    assert job.state == "cancelled"
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (WELCOME, 0)
    assert await world.ledger("e1") == [("refund", 1), ("reserve", 1)]
    assert (await world.service.imagine.cancel(ANN, "e1")).text == messages.cancel_outcome("finished")


async def test_a_failed_render_is_not_charged(world: World) -> None:
    world.backend.fail = ContentPolicyError("flagged")
    await world.service.imagine.submit(ANN, asked("e1"))
    await world.run_jobs()
    job = await world.job("e1")
    assert (job.state, job.error) == ("failed", "content_policy")
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (WELCOME, 0)
