"""Selling credits in Telegram Stars through the real python-telegram-bot against the fake Bot API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bot import messages
from storage import tables as t
from storage.states import LedgerKind
from tests.bot.telegram.stack import ADMIN_ID, Stack, face_photo, is_status, telegram_stack
from tests.fakes.telegram import STARS, BotMessage, Invoice, TgChat, TgUser

# These tests are about the price: no privacy notice first, no face check of the plain test photo.
UNCHECKED: dict[str, Any] = {"privacy": {"consent": False}, "judge": {"enabled": False}}
PACKS: dict[str, Any] = {"packs": [{"credits": 50, "stars": 100}, {"credits": 120, "stars": 200}]}


def purchases_of(*, session: Connection, user_id: int) -> list[tuple[str, int, str]]:
    rows = session.execute(
        select(t.ledger.c.kind, t.ledger.c.amount, t.ledger.c.note)
        .where(t.ledger.c.user_id == user_id, t.ledger.c.kind.in_([LedgerKind.PURCHASE, LedgerKind.PURCHASE_REFUND]))
        .order_by(t.ledger.c.id)
    )
    return [(str(kind), int(amount), str(note)) for kind, amount, note in rows]


async def _invoices(s: Stack, user: TgUser, chat: TgChat) -> list[Invoice]:
    s.telegram.send_text(user, chat, "/buy")
    intro = await s.reply_to(chat)
    assert intro.text == messages.BUY_INTRO
    last = await s.reply_to(chat, lambda m: m.raw.get("invoice", {}).get("total_amount") == 200)
    assert [m.method for m in s.telegram.messages(chat)][-2:] == ["sendInvoice", "sendInvoice"]
    assert last.message_id == s.telegram.invoices(chat)[-1].message_id
    return s.telegram.invoices(chat)


async def _credits(s: Stack, user: TgUser) -> int:
    row = await s.user_row(user)
    assert row is not None
    return row.credits


async def test_a_stars_payment_credits_once_through_a_repeated_update_and_a_restart(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, shop=PACKS) as s:
        user, chat = s.person()
        small, large = await _invoices(s, user, chat)
        expected = (STARS, 100, "50 credits", "pack:50:100")
        assert (small.currency, small.total_amount, small.title, small.payload) == expected
        assert large.total_amount == 200
        sent = [call.params for call in s.telegram.calls if call.method == "sendInvoice"]
        assert all("provider_token" not in params or not params["provider_token"] for params in sent)

        checkout = await s.telegram.pay(user, small)
        assert checkout.status == "paid" and checkout.charge is not None and checkout.update is not None
        answer = s.telegram.payments.answers[checkout.query_id]
        assert answer.ok and answer.after_s < 10
        thanks = await s.reply_to(chat)
        assert thanks.text == messages.purchased(50, 60)

        # Telegram delivers the same update again (it was not confirmed in time)...
        s.telegram.redeliver(checkout.update)
        await s.telegram.wait_for(lambda: not s.telegram.pending_updates)
        # ...and once more after the bot restarted.
        await s.restart()
        s.telegram.redeliver(checkout.update)
        await s.telegram.wait_for(lambda: not s.telegram.pending_updates)
        s.telegram.send_text(user, chat, "/quota")
        quota = await s.reply_to(chat)
        assert quota.text is not None and quota.text.startswith("Credits: 60")
        assert "+50 credits (100 Stars)" in quota.text
        assert [m.text for m in s.telegram.messages(chat)].count(messages.purchased(50, 60)) == 1
        row = await s.user_row(user)
        assert row is not None and s.runtime is not None
        charge = checkout.charge.charge_id
        assert await s.runtime.db.read(purchases_of, user_id=row.id) == [("purchase", 50, f"charge {charge}")]


async def test_a_banned_user_and_a_pack_no_longer_on_sale_are_declined_at_checkout(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, shop=PACKS) as s:
        user, chat = s.person()
        small, _ = await _invoices(s, user, chat)
        admin, admin_chat = s.person("Admin", ADMIN_ID)
        s.telegram.send_text(admin, admin_chat, f"/admin ban {user.id} chargebacks")
        await s.reply_to(admin_chat)

        checkout = await s.telegram.pay(user, small)
        assert (checkout.status, checkout.error_message) == ("declined", messages.BUY_BANNED)
        assert s.telegram.payments.charges == {}
        assert s.telegram.payments.answers[checkout.query_id].after_s < 10

        s.telegram.send_text(admin, admin_chat, f"/admin unban {user.id}")
        await s.reply_to(admin_chat)
        forged = Invoice(chat.id, small.message_id, small.title, small.description, "pack:500:1", STARS, 1)
        checkout = await s.telegram.pay(user, forged)
        assert (checkout.status, checkout.error_message) == ("declined", messages.PACK_GONE)
        assert await _credits(s, user) == 10


async def test_an_admin_refund_returns_the_stars_and_takes_the_credits(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, shop=PACKS) as s:
        user, chat = s.person()
        small, large = await _invoices(s, user, chat)
        first = await s.telegram.pay(user, small)
        second = await s.telegram.pay(user, large)
        assert first.charge is not None and second.charge is not None
        await s.reply_to(chat)
        await s.reply_to(chat)
        assert await _credits(s, user) == 180
        admin, admin_chat = s.person("Admin", ADMIN_ID)

        s.telegram.send_text(user, chat, f"/admin refund {first.charge.charge_id}")
        refused = await s.reply_to(chat)
        assert refused.text == messages.NOT_ADMIN
        s.telegram.send_text(admin, admin_chat, f"/admin refund {first.charge.charge_id}")
        done = await s.reply_to(admin_chat)
        assert done.text == messages.refunded(first.charge.charge_id, 50)
        assert s.telegram.payments.refunds == [first.charge.charge_id] and first.charge.refunded
        assert await _credits(s, user) == 130
        s.telegram.send_text(admin, admin_chat, f"/admin refund {first.charge.charge_id}")
        assert (await s.reply_to(admin_chat)).text == messages.REFUND_ALREADY
        assert s.telegram.call_count("refundStarPayment") == 1

        # Spend most of the second pack: its refund needs "force" and takes back only what is left.
        s.telegram.send_text(admin, admin_chat, f"/admin grant {user.id} -100")
        await s.reply_to(admin_chat)
        s.telegram.send_text(admin, admin_chat, f"/admin refund {second.charge.charge_id}")
        assert (await s.reply_to(admin_chat)).text == messages.refund_spent(120, 30)
        assert not second.charge.refunded
        s.telegram.send_text(admin, admin_chat, f"/admin refund {second.charge.charge_id} force")
        assert (await s.reply_to(admin_chat)).text == messages.refunded(second.charge.charge_id, 30)
        assert second.charge.refunded and await _credits(s, user) == 0


async def test_terms_and_payment_support_answer(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, shop={**PACKS, "support": "Write to @likeness_help"}) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/terms")
        assert (await s.reply_to(chat)).text == messages.DEFAULT_TERMS
        s.telegram.send_text(user, chat, "/paysupport")
        assert (await s.reply_to(chat)).text == "Write to @likeness_help"


async def test_without_packs_buy_says_where_credits_come_from(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/buy")
        assert (await s.reply_to(chat)).text == messages.NOTHING_FOR_SALE
        assert s.telegram.invoices(chat) == []


def _confirm_buttons(message: BotMessage) -> bool:
    return [b.get("callback_data", "")[:3] for b in message.buttons] == ["ok:", "no:"]


async def test_a_costly_job_is_confirmed_with_a_button_and_charged_once(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, route=["fal-pulid"], **UNCHECKED) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="two knights --n 2")
        ask = await s.reply_to(chat, _confirm_buttons)
        assert ask.text == messages.confirm_cost(2, 10, 2)
        row = await s.user_row(user)
        assert row is not None and row.reserved == 0
        confirm = ask.buttons[0]["callback_data"]
        first = s.telegram.press_button(user, ask, confirm)
        second = s.telegram.press_button(user, ask, confirm, check=False)  # a double tap
        await s.telegram.wait_for_callback_answer(first)
        await s.telegram.wait_for_callback_answer(second)
        result = await s.photo_result(chat)
        assert result.media_group_id is not None or result.photo is not None
        job = await s.settled(f"tg:{chat.id}:1")
        assert job.cost == 2 and job.state == "succeeded"
        assert await _credits(s, user) == 8
        assert len(s.fal.requests("submit")) == 1
        assert not any(is_status(m) for m in s.telegram.messages(chat) if m.message_id not in (ask.message_id,)
                       and not m.deleted)  # fmt: skip


async def test_a_declined_costly_job_costs_nothing(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, route=["fal-pulid"], **UNCHECKED) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="two knights --n 2")
        ask = await s.reply_to(chat, _confirm_buttons)
        query = s.telegram.press_button(user, ask, ask.buttons[1]["callback_data"])
        await s.telegram.wait_for_callback_answer(query)
        await s.telegram.wait_for(lambda: ask.text == messages.DECLINED)
        assert s.fal.requests("submit") == []
        assert await _credits(s, user) == 10
