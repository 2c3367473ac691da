"""Result delivery through the real Discord front end against the fake Discord: a user nobody can reach is
refunded at once and /history says so; a server error that outlasts discord.py's own retries is tried later."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import bot.discord.frontend
from bot import messages
from bot.settings import Settings
from storage import reconcile
from tests.bot.discord.conftest import (  # noqa: F401  (fixtures)
    CHANNEL_MESSAGES,
    FOLLOWUP,
    Stack,
    face_png,
    fake_discord,
    fake_fal,
    make_settings,
    quick_ready,
    stack,
)
from tests.fakes.discord import InteractionRecord, Upload

pytestmark = pytest.mark.timeout(60)


async def imagine(s: Stack, prompt: str) -> InteractionRecord:
    fake = s.discord
    photo = Upload("me.png", face_png(), "image/png")
    return await fake.slash(fake.alice, fake.general, "imagine", {"prompt": prompt}, attachments={"photo": photo})


async def test_a_user_no_path_reaches_is_refunded_at_once_and_history_says_so(stack: Stack) -> None:  # noqa: F811
    fake = stack.discord
    async with stack.serving():
        fake.fail("POST", FOLLOWUP, status=401, code=50027, message="Invalid Webhook Token", times=2)
        fake.deny_channel(fake.general)
        fake.close_dms(fake.alice)  # 403 code 50007: cannot send messages to this user
        ix = await imagine(stack, "a lighthouse")
        job = await stack.delivered(f"dc:{ix.id}")
        assert (job.state, job.delivery_state, job.delivery_attempts) == ("succeeded", "undeliverable", 0)
        assert await stack.ledger(job.id) == [("commit", 1), ("refund", 1), ("reserve", 1)]
        user = await stack.user(fake.alice)
        assert (user.credits, user.reserved) == (10, 0)
        assert await stack.db.read(reconcile.find_drift) == []

        fake.allow_channel(fake.general)
        history = await fake.slash(fake.alice, fake.general, "history")
        await fake.wait_for(lambda: history.original is not None and "a lighthouse" in history.original.content)
        assert history.original is not None
        assert "succeeded, " + messages.NOT_DELIVERED in history.original.content


async def test_a_server_error_that_outlasts_the_clients_retries_is_tried_later_and_charged_once(
    stack: Stack,  # noqa: F811
    make_settings: Callable[..., Settings],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = stack.discord
    monkeypatch.setattr(bot.discord.frontend, "TOKEN_MARGIN_S", 15 * 60 + 1)  # straight to the channel
    async with stack.serving(make_settings(delivery={"retry_base_s": 0.05, "retry_cap_s": 0.2})):
        # discord.py gives up on a 503 at once; ten of them used to exhaust every try.
        fake.fail("POST", CHANNEL_MESSAGES, status=503, code=0, message="Service Unavailable", times=10)
        ix = await imagine(stack, "a harbour")
        job = await stack.delivered(f"dc:{ix.id}", timeout=30)
        assert (job.delivery_state, job.delivery_path, job.delivery_attempts) == ("delivered", "channel", 10)
        assert [r.status for r in fake.requests_to("POST", CHANNEL_MESSAGES)] == [503] * 10 + [200]
        assert await stack.ledger(job.id) == [("commit", 1), ("reserve", 1)]
        assert (await stack.user(fake.alice)).credits == 9
