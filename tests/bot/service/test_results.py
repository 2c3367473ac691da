"""Finished jobs on their way out: what each delivers, where to, and the bookkeeping of the delivery."""

from __future__ import annotations

import asyncio

from bot import messages
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button
from bot.service.results import Results
from engine.errors import NoFaceError
from storage import reconcile
from tests.bot.service.conftest import ADMIN, ANN, BOB, WELCOME, ChatTarget, World, face_photo
from tests.bot.service.scripted import tiny_png


def render(event: str, prompt: str = "a knight", chat: str = "c1") -> ImagineInput:
    return ImagineInput(event_id=event, text=prompt, reply_target=ChatTarget(chat), photos=(face_photo(),))


async def test_a_rendered_job_delivers_its_images_caption_and_buttons_once(world: World) -> None:
    results = world.service.results
    await world.service.imagine.submit(ANN, render("e1", "a knight --n 2"))
    await world.service.imagine.confirm(ANN, "e1", ChatTarget("c1"))  # two images: confirmed first
    assert await results.pending(["telegram"]) == []  # not finished yet
    await world.run_jobs()

    [pending] = await results.pending(["telegram"])
    assert (pending.job_id, pending.target.platform) == ("e1", "test")
    assert dict(pending.target.data) == {"platform": "test", "chat": "c1", "status": None}
    assert (pending.parts_sent, pending.attempts, pending.failing_since) == (0, 0, None)
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


async def test_a_failed_try_waits_for_its_time_and_a_later_try_resumes_after_the_parts_sent(world: World) -> None:
    now = [1_000.0]
    results = Results(db=world.db, blobs=world.blobs, clock=lambda: now[0])
    await world.service.imagine.submit(ANN, render("e1"))
    await world.run_jobs()
    assert await results.retry_at("e1", 1_030.0) == 1
    assert await results.pending(["telegram"]) == []  # not due yet
    now[0] = 1_030.0
    await results.parts_sent("e1", 2)
    await results.parts_sent("e1", 1)  # a late, smaller count never goes back
    [pending] = await results.pending(["telegram"])
    assert (pending.parts_sent, pending.attempts, pending.failing_since) == (2, 1, 1_000.0)
    assert await results.retry_at("e1", 1_090.0) == 2
    job = await world.job("e1")
    assert (job.delivery_next_at, job.delivery_failing_since) == (1_090.0, 1_000.0)  # the window's start stays


async def test_an_undeliverable_result_is_refunded_once_and_leaves_the_queue(world: World) -> None:
    results = world.service.results
    await world.service.imagine.submit(ANN, render("e1"))
    await world.run_jobs()
    assert (await world.user(ANN)).credits == WELCOME - 1
    assert await results.undeliverable("e1")
    assert not await results.undeliverable("e1")  # once
    job = await world.job("e1")
    assert (job.state, job.delivery_state, job.delivery_path) == ("succeeded", "undeliverable", None)
    assert await world.ledger("e1") == [("commit", 1), ("refund", 1), ("reserve", 1)]
    user = await world.user(ANN)
    assert (user.credits, user.reserved, user.day_jobs) == (WELCOME, 0, 0)
    assert await results.pending(["telegram"]) == []
    assert await world.db.read(reconcile.find_drift) == []
    history = await world.service.account.history(ANN)
    assert messages.NOT_DELIVERED in history.text


async def test_an_undeliverable_failure_notice_refunds_nothing_more(world: World) -> None:
    results = world.service.results
    world.backend.fail = NoFaceError("no face found")
    await world.service.imagine.submit(ANN, render("e1"))
    await world.run_jobs()
    assert await results.undeliverable("e1")
    assert await world.ledger("e1") == [("refund", 1), ("reserve", 1)]
    assert (await world.user(ANN)).credits == WELCOME
    assert await world.db.read(reconcile.find_drift) == []
    assert messages.NOT_DELIVERED not in (await world.service.account.history(ANN)).text


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


async def test_a_ban_ends_the_users_queued_jobs_before_they_run_or_charge(world: World) -> None:
    await world.service.imagine.submit(ANN, render("e1"))
    await world.service.imagine.submit(ANN, render("e2", "a second knight"))
    await world.service.imagine.submit(BOB, render("b1", chat="c2"))
    await world.service.admin.ban(ADMIN, ANN.user_id, "spam")
    await world.run_jobs()

    assert [request.prompt for request in world.backend.requests] == ["a knight"]  # Bob's only
    for job_id in ("e1", "e2"):
        job = await world.job(job_id)
        assert (job.state, job.delivery_state) == ("cancelled", "pending")  # they are told, and refunded
        assert await world.ledger(job_id) == [("refund", 1), ("reserve", 1)]
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (WELCOME, 0)
    assert (await world.job("b1")).state == "succeeded"
    assert await world.db.read(reconcile.find_drift) == []
