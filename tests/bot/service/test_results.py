"""Finished jobs on their way out: what each delivers, where to, and the bookkeeping of the delivery."""

from __future__ import annotations

import asyncio

from bot import messages
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button
from engine.errors import NoFaceError
from tests.bot.service.conftest import ANN, BOB, ChatTarget, World, face_photo
from tests.bot.service.scripted import tiny_png


def render(event: str, prompt: str = "a knight", chat: str = "c1") -> ImagineInput:
    return ImagineInput(event_id=event, text=prompt, reply_target=ChatTarget(chat), photos=(face_photo(),))


async def test_a_rendered_job_delivers_its_images_caption_and_buttons_once(world: World) -> None:
    results = world.service.results
    await world.service.imagine.submit(ANN, render("e1", "a knight --n 2"))
    assert await results.pending(["telegram"]) == []  # not finished yet
    await world.run_jobs()

    [pending] = await results.pending(["telegram"])
    assert (pending.job_id, pending.platform) == ("e1", "test")
    assert dict(pending.data) == {"platform": "test", "chat": "c1", "status": None}
    assert await results.pending(["discord"]) == []  # another platform's users

    reply = await results.reply("e1")
    assert reply is not None
    assert reply.text == "a knight · seed 4242 · scripted"
    assert reply.buttons == (Button("🎲 Reroll", Action.REROLL, "e1"), Button("✨ Vary", Action.VARY, "e1"))
    assert [(i.filename, i.content_type, i.width, i.data) for i in reply.images] == [
        ("likeness-1.png", "image/png", 8, tiny_png()),
        ("likeness-2.png", "image/png", 8, tiny_png()),
    ]

    await results.delivered("e1", "reply")
    job = await world.job("e1")
    assert (job.delivery_state, job.delivery_path) == ("delivered", "reply")
    assert await results.pending(["telegram"]) == []


async def test_failed_and_cancelled_jobs_deliver_what_happened_and_the_refund(world: World) -> None:
    results = world.service.results
    world.backend.fail = NoFaceError("no face found")
    await world.service.imagine.submit(ANN, render("e1"))
    await world.run_jobs()
    await world.service.imagine.submit(BOB, render("e2", chat="c2"))
    await world.service.imagine.cancel(BOB, "e2")

    assert sorted(p.job_id for p in await results.pending(["telegram"])) == ["e1", "e2"]
    failed, cancelled = await results.reply("e1"), await results.reply("e2")
    assert failed is not None and failed.text == messages.failure("no_face", 1) and not failed.images
    assert cancelled is not None and cancelled.text == messages.CANCELLED_REFUNDED
    assert await results.reply("nobody") is None


async def test_failed_attempts_are_counted_and_an_undeliverable_job_leaves_the_queue(world: World) -> None:
    results = world.service.results
    await world.service.imagine.submit(ANN, render("e1"))
    await world.run_jobs()
    assert [await results.failed_attempt("e1") for _ in range(3)] == [1, 2, 3]
    await results.undeliverable("e1")
    job = await world.job("e1")
    assert (job.delivery_state, job.delivery_path, job.delivery_attempts) == ("undeliverable", None, 3)
    assert await results.pending(["telegram"]) == []


async def test_progress_goes_to_the_status_message_only_while_the_job_runs(world: World) -> None:
    results = world.service.results
    world.backend.hold = asyncio.Event()
    await world.service.imagine.submit(ANN, render("e1"))
    await world.service.imagine.attach_status("e1", ChatTarget("c1", status="m1"))
    running = asyncio.create_task(world.run_jobs())
    await asyncio.wait_for(world.backend.rendering.wait(), 5)

    target = await results.progress_target("e1")
    assert target is not None and dict(target.data) == {"platform": "test", "chat": "c1", "status": "m1"}
    assert any(e.job_id == "e1" and e.fraction == 0.5 for e in world.events)
    world.backend.hold.set()
    await asyncio.wait_for(running, 10)
    assert await results.progress_target("e1") is None  # the result replaces the status
    assert await results.progress_target("nobody") is None
