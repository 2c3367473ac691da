"""Result delivery through the real Telegram front end against the fake Bot API: an outage is waited out and
charged once, a blocked bot is refunded and shown in /history, and a reply of several messages that failed
half-way sends only what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from bot import messages
from bot.frontend import DeliveryDeferred, DeliveryParts, Undeliverable
from bot.service.replies import Action, Button, Reply, ReplyImage
from bot.service.use_cases import LikenessService
from bot.settings import TelegramSettings
from bot.telegram.frontend import TelegramFrontEnd
from bot.telegram.target import TelegramTarget
from storage import reconcile
from storage import tables as t
from storage.db import Database
from storage.models import Job
from storage.states import DeliveryState, JobState
from tests.bot.service.scripted import tiny_png
from tests.bot.telegram.stack import Stack, face_photo, is_status, telegram_stack
from tests.fakes.fal import FalScript
from tests.fakes.telegram import BotMessage, FakeTelegram

# python-telegram-bot reads its own deprecated RetryAfter.retry_after when it handles a 429.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Deprecated since version v22\\.2. In a future major version attribute `retry_after` will be "
    "of type `datetime\\.timedelta`:telegram.warnings.PTBDeprecationWarning"
)
QUICK_RETRIES = {"retry_base_s": 0.05, "retry_cap_s": 0.2}


async def test_an_outage_of_the_bot_api_is_waited_out_and_the_result_charged_once(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, delivery=QUICK_RETRIES) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=3)
        s.telegram.send_photo(user, chat, face_photo(), caption="after the outage")
        await s.reply_to(chat, is_status)
        s.telegram.fail_next("sendPhoto", 12, error_code=502)  # more failures than there used to be tries
        result = await s.photo_result(chat, timeout=30)
        assert "after the outage" in (result.caption or "")
        job = await s.settled(f"tg:{chat.id}:1")
        assert job.delivery_attempts == 12 and job.state == JobState.SUCCEEDED
        assert [c.status for c in s.telegram.calls if c.method == "sendPhoto"] == [502] * 12 + [200]
        assert len([m for m in s.telegram.messages(chat) if m.photo is not None]) == 1
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (9, 0)


async def test_a_user_who_blocked_the_bot_is_refunded_and_history_says_so(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, delivery=QUICK_RETRIES) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=3)
        s.telegram.send_photo(user, chat, face_photo(), caption="never seen")
        await s.reply_to(chat, is_status)
        s.telegram.block(user)
        job = await s.settled(f"tg:{chat.id}:1", DeliveryState.UNDELIVERABLE)
        assert job.state == JobState.SUCCEEDED and job.delivery_attempts == 0  # refused for good: not retried
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (10, 0)  # rendered, never seen: refunded
        assert s.runtime is not None and await s.runtime.db.read(reconcile.find_drift) == []

        s.telegram.unblock(user)
        s.telegram.send_text(user, chat, "/history")
        page = await s.reply_to(chat, lambda m: "never seen" in (m.text or ""))
        assert "succeeded, " + messages.NOT_DELIVERED in (page.text or "")


async def test_an_album_whose_buttons_failed_sends_only_the_buttons_after_a_restart(tmp_path: Path) -> None:
    hour = {"retry_base_s": 3600, "retry_cap_s": 3600}
    async with telegram_stack(tmp_path, route=["fal-pulid"], delivery=hour) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=3)
        s.telegram.send_photo(user, chat, face_photo(), caption="two knights --n 2")
        # A job of several images waits for its user's confirmation; the ask is sent and the press only edits it,
        # so the next sendMessage is the one that carries the result's buttons.
        ask = await s.reply_to(chat, _asks_to_confirm)
        assert ask.text == messages.confirm_cost(2, 10, 2)
        s.telegram.fail_next("sendMessage", 1, error_code=502)  # the message that carries the buttons
        await s.telegram.wait_for_callback_answer(s.telegram.press_button(user, ask, ask.buttons[0]["callback_data"]))
        job_id = f"tg:{chat.id}:1"
        job = await asyncio.wait_for(retried(s, job_id), 20)
        assert (job.delivery_state, job.delivery_parts, job.delivery_attempts) == ("pending", 1, 1)

        await s.stop()  # the next try is an hour away; a restart must not lose what was already sent
        store = Database(s.settings.resolved_database_url)
        try:  # the hour passes while the service is down
            await store.write(lambda session: session.execute(_due_now(job_id)))
        finally:
            await store.dispose()
        await s.start()
        job = await s.settled(job_id)
        assert job.delivery_parts == 2
        assert s.telegram.call_count("sendMediaGroup") == 1  # the album went out once
        photos = [m for m in s.telegram.messages(chat) if m.photo is not None]
        assert len(photos) == 2
        buttons = [m for m in s.telegram.messages(chat) if m.text == messages.BUTTONS_BELOW]
        assert len(buttons) == 1 and buttons[0].buttons
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (8, 0)


async def test_a_cancel_the_worker_has_not_seen_when_the_render_finishes_is_not_charged(tmp_path: Path) -> None:
    # Heartbeats far apart: the render finishes before the worker hears of the cancel.
    async with telegram_stack(tmp_path, queue={"lease_s": 120, "heartbeat_s": 60}) as s:
        user, chat = s.person()
        s.fal.script = FalScript(queue_ticks=3)
        s.telegram.send_photo(user, chat, face_photo(), caption="changed my mind")
        status = await s.reply_to(chat, is_status)
        job_id = f"tg:{chat.id}:1"
        await asyncio.wait_for(_until_running(s, job_id), 10)
        [cancel] = [b["callback_data"] for b in status.buttons if str(b["callback_data"]).startswith("cx:")]
        query = s.telegram.press_button(user, status, cancel)
        answer = await s.telegram.wait_for_callback_answer(query, timeout=10)
        assert answer.text == messages.cancel_outcome("requested")

        job = await s.settled(job_id)
        assert (job.state, job.error) == (JobState.CANCELLED, "cancelled")
        assert len(s.fal.requests("submit")) == 1  # it did render
        notice = await s.reply_to(chat, lambda m: m.text == messages.CANCELLED_REFUNDED)
        assert notice.photo is None and not [m for m in s.telegram.messages(chat) if m.photo is not None]
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (10, 0)  # as the user was told


def _asks_to_confirm(message: BotMessage) -> bool:
    return [str(b.get("callback_data", ""))[:3] for b in message.buttons] == ["ok:", "no:"]


async def _until_running(s: Stack, job_id: str) -> None:
    while True:
        job = await s.job(job_id)
        if job is not None and job.state == JobState.RUNNING:
            return
        await asyncio.sleep(0.02)


@pytest.fixture
async def frontend() -> AsyncIterator[tuple[TelegramFrontEnd, FakeTelegram]]:
    async with FakeTelegram() as fake:
        settings = TelegramSettings(
            token=SecretStr(fake.token), base_url=fake.base_url, base_file_url=fake.base_file_url
        )
        # Delivery needs no use case: the front end only renders the reply it is given.
        front = TelegramFrontEnd(settings, cast(LikenessService, None))
        await front.app.initialize()
        try:
            yield front, fake
        finally:
            await front.app.shutdown()


def three_message_reply() -> Reply:
    photos = tuple(ReplyImage(tiny_png(), "image/png", 8, 8, filename=f"p{i}.png") for i in range(2))
    banner = ReplyImage(tiny_png(42, 1), "image/png", 4200, 100, filename="banner.png")  # too long for a photo
    return Reply("a frieze", (Button("🎲 Reroll", Action.REROLL, "j"),), (*photos, banner))


async def test_the_second_of_three_messages_failing_resumes_with_the_second(
    frontend: tuple[TelegramFrontEnd, FakeTelegram],
) -> None:
    front, fake = frontend
    user = fake.user("Ann")
    chat = fake.private_chat(user)
    target = TelegramTarget(chat.id)
    recorded: list[int] = []

    async def record(parts: int) -> None:
        recorded.append(parts)

    fake.fail_next("sendDocument", 1, error_code=502)
    parts = DeliveryParts(0, record)
    with pytest.raises(DeliveryDeferred):
        await front.deliver("j", target, three_message_reply(), parts)
    assert recorded == [1]

    assert await front.deliver("j", target, three_message_reply(), DeliveryParts(recorded[-1], record)) == "reply"
    assert recorded == [1, 2, 3]
    calls = [(c.method, c.status) for c in fake.calls if c.method.startswith("send")]
    assert calls == [
        ("sendMediaGroup", 200),
        ("sendDocument", 502),
        ("sendDocument", 200),
        ("sendMessage", 200),
    ]
    texts = [m.text or m.caption for m in fake.messages(chat)]
    assert texts.count(messages.BUTTONS_BELOW) == 1


@pytest.mark.parametrize(
    ("code", "description", "error"),
    [
        (403, "Forbidden: bot was blocked by the user", Undeliverable),
        (400, "Bad Request: chat not found", Undeliverable),
        (502, "Bad Gateway", DeliveryDeferred),
        (500, "Internal Server Error", DeliveryDeferred),
    ],
)
async def test_send_errors_are_told_apart_as_permanent_or_passing(
    frontend: tuple[TelegramFrontEnd, FakeTelegram], code: int, description: str, error: type[Exception]
) -> None:
    front, fake = frontend
    chat = fake.private_chat(fake.user("Ann"))
    fake.fail_next("sendMessage", 1, error_code=code, description=description)
    with pytest.raises(error):
        await front.deliver("j", TelegramTarget(chat.id), Reply("Cancelled."))


async def retried(s: Stack, job_id: str) -> Job:
    """The job once a delivery try has failed."""
    while True:
        job = await s.job(job_id)
        if job is not None and job.delivery_attempts:
            return job
        await asyncio.sleep(0.05)


def _due_now(job_id: str) -> Any:
    return update(t.jobs).where(t.jobs.c.id == job_id).values(delivery_next_at=0.0)


async def test_flood_control_outlasting_the_rate_limiters_retries_is_deferred_no_sooner_than_asked(
    frontend: tuple[TelegramFrontEnd, FakeTelegram],
) -> None:
    front, fake = frontend
    chat = fake.private_chat(fake.user("Ann"))
    fake.rate_limit("sendMessage", times=4, retry_after=1)  # one more than the rate limiter retries
    with pytest.raises(DeliveryDeferred) as deferred:
        await front.deliver("j", TelegramTarget(chat.id), Reply("Cancelled."))
    assert deferred.value.retry_after_s == 1.0
