"""The fakes' payment flows as the platforms document them: Telegram Stars through python-telegram-bot's Bot,
Discord SKUs and entitlements over its REST API (and discord.py's client where it has calls for them)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import Bot, LabeledPrice
from telegram.error import BadRequest

from tests.fakes.discord import FakeDiscord, discord_py_endpoints
from tests.fakes.telegram import STARS, FakeTelegram

with warnings.catch_warnings():
    # discord.py's voice player imports audioop (Python 3.11-3.12), warning while this module is collected.
    warnings.filterwarnings("ignore", message=re.escape("'audioop' is deprecated"), category=DeprecationWarning)
    import discord

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegram, Bot]]:
    async with FakeTelegram() as fake:
        bot = Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
        async with bot:
            yield fake, bot


async def _answer_queries(fake: FakeTelegram, bot: Bot, ok: bool = True, delay: float = 0.0) -> None:
    """A bot's loop over getUpdates that answers each pre-checkout query (after ``delay``)."""
    offset = 0
    while True:
        for update in await bot.get_updates(offset=offset, timeout=1):
            offset = update.update_id + 1
            if update.pre_checkout_query is not None:
                await asyncio.sleep(delay)
                error = None if ok else "Sold out"
                with contextlib.suppress(BadRequest):  # answered too late: Telegram refuses the answer
                    await update.pre_checkout_query.answer(ok=ok, error_message=error)


async def test_a_stars_invoice_takes_xtr_one_price_and_no_provider_token(telegram: tuple[FakeTelegram, Bot]) -> None:
    fake, bot = telegram
    user = fake.user()
    chat = fake.private_chat(user)
    sent = await bot.send_invoice(chat.id, "50 credits", "A pack", "pack:50:100", STARS, [LabeledPrice("50", 100)])
    assert sent.invoice is not None and (sent.invoice.currency, sent.invoice.total_amount) == (STARS, 100)
    with pytest.raises(BadRequest, match=r"(?i)PAYMENT_PROVIDER_INVALID"):
        await bot.send_invoice(chat.id, "t", "d", "p", STARS, [LabeledPrice("a", 1)], provider_token="tok")
    with pytest.raises(BadRequest, match=r"(?i)CURRENCY_TOTAL_AMOUNT_INVALID"):
        await bot.send_invoice(chat.id, "t", "d", "p", STARS, [LabeledPrice("a", 1), LabeledPrice("b", 2)])
    with pytest.raises(BadRequest, match=r"(?i)PAYMENT_PROVIDER_INVALID"):
        await bot.send_invoice(chat.id, "t", "d", "p", "USD", [LabeledPrice("a", 100)])
    with pytest.raises(BadRequest, match=r"(?i)INVOICE_PAYLOAD_INVALID"):
        await bot.send_invoice(chat.id, "t", "d", "x" * 129, STARS, [LabeledPrice("a", 1)])
    with pytest.raises(BadRequest, match=r"(?i)TITLE_INVALID"):
        await bot.send_invoice(chat.id, "t" * 33, "d", "p", STARS, [LabeledPrice("a", 1)])
    assert len(fake.invoices(chat)) == 1


async def test_payment_needs_an_ok_pre_checkout_and_is_refunded_once(telegram: tuple[FakeTelegram, Bot]) -> None:
    fake, bot = telegram
    user = fake.user()
    chat = fake.private_chat(user)
    await bot.send_invoice(chat.id, "50 credits", "A pack", "pack:50:100", STARS, [LabeledPrice("50", 100)])
    [invoice] = fake.invoices(chat)
    answering = asyncio.create_task(_answer_queries(fake, bot))
    try:
        paid = await fake.pay(user, invoice)
    finally:
        answering.cancel()
    assert paid.status == "paid" and paid.charge is not None and paid.update is not None
    payment = paid.update["message"]["successful_payment"]
    assert (payment["currency"], payment["total_amount"], payment["invoice_payload"]) == (STARS, 100, "pack:50:100")
    assert payment["telegram_payment_charge_id"] == paid.charge.charge_id

    assert await bot.refund_star_payment(user.id, paid.charge.charge_id)
    with pytest.raises(BadRequest, match=r"(?i)CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(user.id, paid.charge.charge_id)
    with pytest.raises(BadRequest, match=r"(?i)CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(user.id + 1, "stxCnope")
    refunded = [u["message"] for u in fake.pending_updates if "refunded_payment" in u.get("message", {})]
    assert [m["refunded_payment"]["telegram_payment_charge_id"] for m in refunded] == [paid.charge.charge_id]


async def test_a_declined_or_late_pre_checkout_takes_no_payment(telegram: tuple[FakeTelegram, Bot]) -> None:
    fake, bot = telegram
    user = fake.user()
    chat = fake.private_chat(user)
    await bot.send_invoice(chat.id, "50 credits", "A pack", "pack:50:100", STARS, [LabeledPrice("50", 100)])
    [invoice] = fake.invoices(chat)
    answering = asyncio.create_task(_answer_queries(fake, bot, ok=False))
    try:
        declined = await fake.pay(user, invoice)
    finally:
        answering.cancel()
    assert (declined.status, declined.error_message) == ("declined", "Sold out")

    fake.payments.window_s = 0.3  # Telegram's ten seconds, shortened
    answering = asyncio.create_task(_answer_queries(fake, bot, delay=0.6))
    try:
        late = await fake.pay(user, invoice)
        await asyncio.sleep(0.5)
    finally:
        answering.cancel()
    assert late.status == "timeout" and late.query_id not in fake.payments.answers
    assert fake.payments.charges == {}


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def test_entitlements_are_listed_until_consumed_and_consumed_once(discord_fake: FakeDiscord) -> None:
    fake = discord_fake
    sku = fake.monetization.add_sku("50 credits")
    bought = fake.monetization.grant(fake.alice.id, int(sku["id"]))
    base, app = fake.api_base, fake.application_id
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base}/applications/{app}/skus") as reply:
            assert [s["type"] for s in await reply.json()] == [3]  # consumable
        query = {"user_id": str(fake.alice.id), "sku_ids": sku["id"]}
        async with http.get(f"{base}/applications/{app}/entitlements", params=query) as reply:
            [listed] = await reply.json()
        assert (listed["id"], listed["consumed"], listed["type"]) == (bought["id"], False, 1)
        consume = f"{base}/applications/{app}/entitlements/{bought['id']}/consume"
        async with http.post(consume) as reply:
            assert reply.status == 204
        async with http.post(consume) as reply:
            assert reply.status == 400
        async with http.post(f"{base}/applications/{app}/entitlements/1/consume") as reply:
            assert reply.status == 404 and (await reply.json())["code"] == 10029
    assert fake.monetization.active_for(fake.alice.id) == []
    assert fake.monetization.consumed == [int(bought["id"])]


async def test_discord_py_receives_entitlement_create_and_consumes_it(discord_fake: FakeDiscord) -> None:
    fake = discord_fake
    sku = fake.monetization.add_sku("120 credits")
    seen: asyncio.Queue[discord.Entitlement] = asyncio.Queue()

    class Client(discord.Client):
        async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
            await seen.put(entitlement)

    client = Client(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
    with discord_py_endpoints(fake.api_base, fake.gateway_url):
        await client.login(fake.token)
        task = asyncio.create_task(client.connect())
        try:
            await fake.wait_until_ready()
            await fake.purchase(fake.alice, sku)
            entitlement = await asyncio.wait_for(seen.get(), 5)
            assert (entitlement.user_id, entitlement.sku_id, entitlement.consumed) == (
                fake.alice.id,
                int(sku["id"]),
                False,
            )
            await entitlement.consume()
            assert fake.monetization.consumed == [entitlement.id]
            skus = await client.fetch_skus()
            assert [s.id for s in skus] == [int(sku["id"])]
        finally:
            await client.close()
            task.cancel()
    assert fake.server_errors == []
