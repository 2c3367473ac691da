"""Quota through the use cases: the daily limit users are told about, and taking credits away."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.service.imagine import ImagineInput
from storage import reconcile
from storage.errors import QuotaRefused, RefusalReason
from tests.bot.service.conftest import ADMIN, ANN, BOB, WELCOME, ChatTarget, World
from tests.bot.service.conftest import face_photo as photo


def render(event: str, prompt: str = "a knight") -> ImagineInput:
    return ImagineInput(event_id=event, text=prompt, reply_target=ChatTarget("c1"), photos=(photo(),))


async def test_a_default_limit_of_zero_allows_no_job_and_every_message_says_zero(world: World) -> None:
    assert world.settings.credits.daily_jobs == 20
    await world.service.admin.limit(ADMIN, "default", "0")

    assert "Jobs today: 0 of 0" in (await world.service.account.quota(ANN)).text
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, render("e1"))
    assert refused.value.message == messages.refusal(QuotaRefused(RefusalReason.DAILY_LIMIT, limit=0))
    assert "20" not in refused.value.message
    assert (await world.user(ANN)).reserved == 0


async def test_a_users_limit_of_zero_allows_no_job_even_on_their_first_day(world: World) -> None:
    await world.service.admin.limit(ADMIN, ANN.user_id, "0")
    with pytest.raises(UserError) as refused:
        await world.service.imagine.submit(ANN, render("e1"))
    assert refused.value.message == messages.refusal(QuotaRefused(RefusalReason.DAILY_LIMIT, limit=0))
    assert "Jobs today: 0 of 0" in (await world.service.account.quota(ANN)).text
    # Others keep the configured default.
    assert "Jobs today: 0 of 20" in (await world.service.account.quota(BOB)).text
    await world.service.imagine.submit(BOB, render("e2"))


async def test_taking_away_credits_held_for_a_job_is_refused_with_what_may_be_taken(world: World) -> None:
    admin = world.service.admin
    await world.service.imagine.submit(ANN, render("e1"))  # holds 1 of the welcome credits
    target = f"telegram:{ANN.user_id}"
    with pytest.raises(UserError) as refused:
        await admin.grant(ADMIN, ANN.user_id, str(-WELCOME))
    assert refused.value.message == messages.take_away_refused(target, WELCOME - 1)
    ann = await world.user(ANN)
    assert (ann.credits, ann.reserved) == (WELCOME, 1)

    assert await admin.grant(ADMIN, ANN.user_id, str(-(WELCOME - 1))) == messages.granted(target, -(WELCOME - 1), 1)
    await world.run_jobs()
    ann = await world.user(ANN)
    assert (ann.credits, ann.reserved) == (0, 0)
    assert await world.db.read(reconcile.find_drift) == []
