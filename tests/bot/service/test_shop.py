"""Selling credits through the service: what is on sale, checkouts, payments credited once, refunds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot import messages
from bot.errors import UserError
from bot.service import shop as shop_module
from bot.service.imagine import ImagineInput
from bot.service.replies import Reply
from bot.service.shop import RefundRefused, Shop
from bot.service.use_cases import LikenessService
from storage import purchases
from tests.bot.service.conftest import ADMIN, ANN, BOB, MEMBER, WELCOME, ChatTarget, World, face_photo, world_settings

PACKS = [{"credits": 50, "stars": 100}, {"credits": 120, "stars": 200, "discord_sku": "777"}]


@pytest.fixture
def shop(world: World, tmp_path: Path) -> Shop:
    settings = world_settings(tmp_path, shop={"packs": PACKS, "support": "write to @likeness_help"})
    service = LikenessService(db=world.db, blobs=world.blobs, router=world.router, settings=settings)
    world.service = service
    return service.shop


class Refunds:
    """The platform's side of a refund, as a test scripts it."""

    def __init__(self, refusal: RefundRefused | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refusal = refusal

    async def __call__(self, user_id: str, charge_id: str) -> None:
        self.calls.append((user_id, charge_id))
        if self.refusal is not None:
            raise self.refusal


async def _pay(shop: Shop, charge: str = "stx-1", payload: str = "pack:50:100", amount: int = 100) -> Reply | None:
    return await shop.paid(ANN, charge_id=charge, provider_charge_id="", payload=payload, currency="XTR", amount=amount)


def test_the_star_packs_are_the_invoices_and_the_skus_the_store(shop: Shop) -> None:
    invoices = shop.invoices()
    assert [(i.title, i.payload, i.stars) for i in invoices] == [
        ("50 credits", "pack:50:100", 100),
        ("120 credits", "pack:120:200", 200),
    ]
    assert all(len(i.title) <= 32 and len(i.description) <= 255 for i in invoices)
    assert shop.store().skus == ("777",)
    assert shop.support().text == "write to @likeness_help"
    assert shop.terms().text == messages.DEFAULT_TERMS


def test_without_packs_the_store_says_how_to_get_credits(world: World) -> None:
    shop = world.service.shop
    assert shop.invoices() == ()
    assert (shop.store().text, shop.store().skus) == (messages.NOTHING_FOR_SALE, ())


async def test_a_checkout_is_declined_for_an_unknown_pack_a_wrong_price_or_a_ban(shop: Shop, world: World) -> None:
    assert await shop.pre_checkout(ANN, "pack:50:100", "XTR", 100) is None
    assert await shop.pre_checkout(ANN, "pack:60:100", "XTR", 100) == messages.PACK_GONE
    assert await shop.pre_checkout(ANN, "pack:50:100", "XTR", 99) == messages.PACK_GONE
    assert await shop.pre_checkout(ANN, "pack:50:100", "USD", 100) == messages.PACK_GONE
    await world.service.admin.ban(ADMIN, ANN.key, "fraud")
    assert await shop.pre_checkout(ANN, "pack:50:100", "XTR", 100) == messages.BUY_BANNED


async def test_a_payment_credits_once_and_quota_lists_it(shop: Shop, world: World) -> None:
    first = await _pay(shop)
    again = await _pay(shop)
    assert first is not None and first.text == messages.purchased(50, WELCOME + 50)
    assert again is None
    assert (await world.user(ANN)).credits == WELCOME + 50
    quota = await world.service.account.quota(ANN)
    assert "Last purchases:" in quota.text and "+50 credits (100 Stars)" in quota.text


async def test_an_admin_refund_takes_the_credits_back_and_returns_the_stars(shop: Shop, world: World) -> None:
    await _pay(shop)
    refunds = Refunds()
    with pytest.raises(UserError) as refused:
        await shop.refund(BOB, "stx-1", refunds)
    assert refused.value.message == messages.NOT_ADMIN
    assert await shop.refund(ADMIN, "stx-1", refunds) == messages.refunded("stx-1", 50)
    assert refunds.calls == [(ANN.user_id, "stx-1")]
    assert (await world.user(ANN)).credits == WELCOME
    assert await shop.refund(ADMIN, "stx-1", refunds) == messages.REFUND_ALREADY
    assert len(refunds.calls) == 1
    quota = await world.service.account.quota(ANN)
    assert "refunded" in quota.text
    with pytest.raises(UserError) as unknown:
        await shop.refund(ADMIN, "nope", refunds)
    assert unknown.value.message == messages.REFUND_UNKNOWN


async def test_a_refund_of_spent_credits_needs_force(shop: Shop, world: World) -> None:
    await _pay(shop)
    await world.service.admin.grant(ADMIN, ANN.key, str(-(WELCOME + 45)))  # only 5 left unspent
    refunds = Refunds()
    with pytest.raises(UserError) as spent:
        await shop.refund(ADMIN, "stx-1", refunds)
    assert spent.value.message == messages.refund_spent(50, 5)
    assert refunds.calls == []
    assert await shop.refund(ADMIN, "stx-1", refunds, force=True) == messages.refunded("stx-1", 5)
    assert (await world.user(ANN)).credits == 0


async def test_a_refund_the_platform_refuses_leaves_the_credits(shop: Shop, world: World) -> None:
    await _pay(shop)
    with pytest.raises(UserError) as refused:
        await shop.refund(ADMIN, "stx-1", Refunds(RefundRefused("CHARGE_NOT_FOUND")))
    assert refused.value.message == messages.refund_refused("CHARGE_NOT_FOUND")
    assert (await world.user(ANN)).credits == WELCOME + 50
    # Already refunded at the platform (an earlier try's answer was lost): finished here too.
    done = await shop.refund(ADMIN, "stx-1", Refunds(RefundRefused("CHARGE_ALREADY_REFUNDED", already=True)))
    assert done == messages.refunded("stx-1", 50)
    found = await world.db.read(purchases.find, platform="telegram", charge_id="stx-1")
    assert found is not None and found.state == purchases.REFUNDED


async def test_a_discord_entitlement_credits_its_pack_once(shop: Shop, world: World) -> None:
    first = await shop.entitled(MEMBER, entitlement_id="e-1", sku_id="777")
    again = await shop.entitled(MEMBER, entitlement_id="e-1", sku_id="777")
    assert first is not None and first.new and first.balance == WELCOME + 120
    assert again is not None and not again.new
    assert await shop.entitled(MEMBER, entitlement_id="e-2", sku_id="999") is None  # not a pack of ours
    with pytest.raises(UserError) as elsewhere:
        await shop.refund(ADMIN, "e-1", Refunds())
    assert elsewhere.value.message == messages.REFUND_ELSEWHERE
    assert (await world.user(MEMBER)).credits == WELCOME + 120


async def test_bought_credits_pay_for_jobs(shop: Shop, world: World) -> None:
    await world.service.admin.grant(ADMIN, ANN.key, str(-WELCOME))
    await _pay(shop)
    given = ImagineInput("e1", "a knight", ChatTarget("c1"), photos=(face_photo(),))
    submitted = await world.service.imagine.submit(ANN, given)
    assert not submitted.pending
    await world.run_jobs()
    assert (await world.user(ANN)).credits == 49


async def test_a_payment_is_credited_after_the_database_was_briefly_away(
    shop: Shop, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop_module, "CREDIT_RETRY_S", (0.0, 0.0))
    real = purchases.credit
    failures = [RuntimeError("connection lost"), RuntimeError("connection lost")]

    def flaky(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(**kwargs)

    monkeypatch.setattr(purchases, "credit", flaky)
    reply = await _pay(shop)
    assert reply is not None and reply.text == messages.purchased(50, WELCOME + 50)
    assert failures == []
