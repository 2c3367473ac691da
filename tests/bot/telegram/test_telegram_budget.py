"""A daily budget through the real python-telegram-bot: jobs stop when it is spent, uncharged, and the admin
hears of 80 % and 100 % once each."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import bot.alerts
from bot import messages
from engine.providers.fal import USD_PER_MEGAPIXEL
from tests.bot.telegram.stack import ADMIN_ID, face_photo, telegram_stack

UNCHECKED: dict[str, Any] = {"privacy": {"consent": False}, "judge": {"enabled": False}}
JOB_USD = round(1024 * 768 / 1_000_000 * USD_PER_MEGAPIXEL, 6)  # fal-flux-pulid's default size, as billed
BUDGET = 0.06  # two jobs fit, a third does not


@pytest.fixture(autouse=True)
def quick_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot.alerts, "POLL_S", 0.05)


async def test_a_spent_budget_refuses_new_jobs_uncharged_and_tells_the_admin_once(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, budget={"daily_usd": {"fal-flux-pulid": BUDGET}}, **UNCHECKED) as s:
        _, admin_chat = s.person("Admin", ADMIN_ID)
        user, chat = s.person()
        for number in range(2):
            sent = s.telegram.send_photo(user, chat, face_photo(), caption=f"portrait {number}")
            await s.settled(f"tg:{chat.id}:{sent['message_id']}")
            await s.photo_result(chat)
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        eighty = await s.reply_to(admin_chat)
        assert eighty.text == messages.budget_alert("fal-flux-pulid", 80, 2 * JOB_USD, BUDGET, day)

        for _ in range(2):
            s.telegram.send_photo(user, chat, face_photo(), caption="one more")
            refused = await s.reply_to(chat)
            assert refused.text == messages.OVER_BUDGET
        hundred = await s.reply_to(admin_chat)
        assert hundred.text == messages.budget_alert("fal-flux-pulid", 100, 2 * JOB_USD, BUDGET, day)
        row = await s.user_row(user)
        assert row is not None and (row.credits, row.reserved) == (8, 0)
        assert len(s.fal.requests("submit")) == 2
        # Told once per threshold: nothing more however often it is hit again.
        s.telegram.send_photo(user, chat, face_photo(), caption="and again")
        await s.reply_to(chat)
        await s.telegram.wait_for(lambda: s.telegram.waiting_polls > 0)
        assert [m.text for m in s.telegram.messages(admin_chat)] == [eighty.text, hundred.text]


async def test_a_groups_administrator_caps_its_images_per_day(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, **UNCHECKED) as s:
        group = s.telegram.group("Portrait club")
        owner, member = s.telegram.user("Olga"), s.telegram.user("Max")
        s.telegram.make_admin(owner, group)
        s.telegram.send_text(member, group, "/admin images 1")
        assert (await s.reply_to(group)).text == messages.NOT_ADMIN
        s.telegram.send_text(owner, group, "/admin images 1")
        assert (await s.reply_to(group)).text == messages.image_cap("in this chat", 1, 0)

        first = s.telegram.send_photo(member, group, face_photo(), caption="portrait")
        await s.settled(f"tg:{group.id}:{first['message_id']}")
        s.telegram.send_photo(owner, group, face_photo(), caption="mine too")
        refused = await s.reply_to(group, lambda m: m.text == messages.scope_cap_reached(1))
        assert refused.reply_to_message_id is not None
        row = await s.user_row(owner)
        assert row is not None and row.reserved == 0 and row.credits == 10
        assert len(s.fal.requests("submit")) == 1
        # In a private chat the group's cap does not apply.
        home = s.telegram.private_chat(owner)
        s.telegram.send_photo(owner, home, face_photo(), caption="at home")
        await s.photo_result(home)
