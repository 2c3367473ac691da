"""Selling credits on Discord through real discord.py against the fake: SKU buttons, entitlements credited once
and consumed, and /buy without monetization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot import messages
from bot.settings import Settings
from tests.fakes.discord import InteractionRecord, SentMessage, Upload

from .conftest import Stack, face_png

pytestmark = pytest.mark.timeout(30)


def _shop(stack: Stack, make_settings: Callable[..., Settings]) -> tuple[Settings, dict[str, Any], dict[str, Any]]:
    small = stack.discord.monetization.add_sku("50 credits")
    large = stack.discord.monetization.add_sku("120 credits")
    packs = [{"credits": 50, "discord_sku": small["id"]}, {"credits": 120, "discord_sku": large["id"]}]
    return make_settings(shop={"packs": packs}), small, large


async def _answered(stack: Stack, interaction: InteractionRecord, start: str) -> SentMessage:
    return await stack.discord.wait_for(
        lambda: (
            interaction.original
            if interaction.original is not None and interaction.original.content.startswith(start)
            else None
        )
    )


async def test_buy_shows_the_store_buttons_and_a_purchase_credits_once(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    settings, small, large = _shop(stack, make_settings)
    async with stack.serving(settings):
        shown = await fake.slash(fake.alice, fake.general, "buy")
        store = await _answered(stack, shown, messages.DISCORD_STORE)
        assert shown.ephemeral
        buttons = [c for row in store.components for c in row.get("components", [])]
        assert [(b["type"], b["style"], b.get("sku_id")) for b in buttons] == [
            (2, 6, small["id"]),
            (2, 6, large["id"]),
        ]
        assert all("custom_id" not in b and not b.get("label") for b in buttons)

        # Alice buys the small pack in Discord's store: ENTITLEMENT_CREATE reaches the bot.
        bought = await fake.purchase(fake.alice, small)
        await fake.wait_for(lambda: int(bought["id"]) in fake.monetization.consumed)
        thanks = await fake.wait_for_message(lambda m: m.content.startswith("Thank you!"))
        assert thanks.channel_id == fake.dm_channel(fake.alice).id
        assert thanks.content == messages.purchased(50, stack.settings.credits.new_user + 50)
        assert (await stack.user(fake.alice)).credits == stack.settings.credits.new_user + 50

        # The same entitlement seen again (the event replayed, or listed by a later interaction) credits nothing.
        await fake.dispatch("ENTITLEMENT_CREATE", dict(bought))
        quota = await fake.slash(fake.alice, fake.general, "quota")
        shown_quota = await _answered(stack, quota, "Credits:")
        assert "+50 credits (Discord)" in shown_quota.content
        assert (await stack.user(fake.alice)).credits == stack.settings.credits.new_user + 50
        assert fake.monetization.consumed == [int(bought["id"])]


async def test_a_purchase_whose_event_was_missed_is_credited_when_the_buyer_next_uses_the_bot(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    settings, _, large = _shop(stack, make_settings)
    # Bought while the bot was down: Discord still lists the entitlement, unconsumed, with every interaction.
    missed = fake.monetization.grant(fake.alice.id, int(large["id"]))
    async with stack.serving(settings):
        quota = await fake.slash(fake.alice, fake.general, "quota")
        shown = await _answered(stack, quota, "Credits:")
        assert shown.content.startswith(f"Credits: {stack.settings.credits.new_user + 120}")
        assert fake.monetization.consumed == [int(missed["id"])]
        again = await fake.slash(fake.alice, fake.general, "buy")
        store = await _answered(stack, again, messages.DISCORD_STORE)  # nothing left to credit
        assert store.content == messages.DISCORD_STORE
        assert (await stack.user(fake.alice)).credits == stack.settings.credits.new_user + 120


async def test_without_monetization_buy_says_how_to_get_credits(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        shown = await fake.slash(fake.alice, fake.general, "buy")
        answer = await _answered(stack, shown, messages.NOTHING_FOR_SALE)
        assert answer.components == [] and shown.ephemeral


async def test_a_costly_job_waits_for_the_confirm_button(stack: Stack, make_settings: Callable[..., Settings]) -> None:
    fake = stack.discord
    async with stack.serving(make_settings(route=["fal-pulid"], privacy={"consent": False}, judge={"enabled": False})):
        photo = Upload("me.png", face_png(), "image/png")
        asked = await fake.slash(
            fake.alice, fake.general, "imagine", {"prompt": "two knights", "images": 2}, attachments={"photo": photo}
        )
        ask = await _answered(stack, asked, "This job")
        assert ask.custom_ids == [f"ok:dc:{asked.id}", f"no:dc:{asked.id}"]
        assert (await stack.user(fake.alice)).reserved == 0
        first = await fake.click(fake.alice, ask, f"ok:dc:{asked.id}")
        second = await fake.click(fake.alice, ask, f"ok:dc:{asked.id}")
        await fake.wait_for_callback(first)
        await fake.wait_for_callback(second)
        job = await stack.delivered(f"dc:{asked.id}")
        assert (job.state, job.cost) == ("succeeded", 2)
        assert await stack.ledger(job.id) == [("commit", 2), ("reserve", 2)]
        assert (await stack.user(fake.alice)).credits == stack.settings.credits.new_user - 2
        assert len(stack.fal.jobs) == 1
