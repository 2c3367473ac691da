"""The fake Telegram Bot API, driven by the real python-telegram-bot Application and Bot."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from PIL import Image
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram import FakeTelegram

AnyApp = Application[Any, Any, Any, Any, Any, Any]

# PTB's RetryAfter reads its own deprecated int-valued attribute while being built; the "." after v22.2
# stands for the colon, which a filter string cannot contain.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Deprecated since version v22\\.2. In a future major version attribute `retry_after` will be "
    "of type `datetime\\.timedelta`:telegram.warnings.PTBDeprecationWarning"
)


def _image(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "orange" if mode == "RGB" else 128).save(buffer, fmt)
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def _build(fake: FakeTelegram, handlers: tuple[BaseHandler[Any, Any, Any], ...], max_retries: int) -> AnyApp:
    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .rate_limiter(AIORateLimiter(max_retries=max_retries))
        .build()
    )
    app.add_handlers(list(handlers))
    return app


@asynccontextmanager
async def polling(
    fake: FakeTelegram, *handlers: BaseHandler[Any, Any, Any], max_retries: int = 1
) -> AsyncIterator[AnyApp]:
    """A running Application that long-polls the fake; handler errors fail the test."""
    app = _build(fake, handlers, max_retries)
    errors: list[object] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    app.add_error_handler(on_error)
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=5)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    assert not errors, errors


async def _echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    await update.message.reply_text(f"echo: {update.message.text}")


async def test_text_update_reaches_the_handler_and_the_reply_is_recorded(fake: FakeTelegram) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text("<b>Hi</b> &amp; welcome", parse_mode="HTML")

    user = fake.user("Ann")
    chat = fake.private_chat(user)
    async with polling(fake, CommandHandler("start", start), MessageHandler(filters.TEXT & ~filters.COMMAND, _echo)):
        fake.send_text(user, chat, "hello")
        reply = await fake.next_message(chat)
        assert reply.text == "echo: hello"
        assert reply.raw["from"]["is_bot"] and reply.raw["chat"]["id"] == user.id

        fake.send_text(user, chat, "/start")  # CommandHandler needs the bot_command entity the fake adds
        welcome = await fake.next_message(chat)
        assert welcome.text == "Hi & welcome"
        assert welcome.raw["entities"] == [{"type": "bold", "offset": 0, "length": 2}]
    # PTB confirms what it handled through getUpdates' offset when it stops.
    assert fake.pending_updates == []
    assert fake.call_count("getMe") == 1 and fake.call_count("deleteWebhook") == 1


async def test_photo_is_downloaded_by_the_bot_through_get_file(fake: FakeTelegram) -> None:
    received: list[bytes] = []

    async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        file = await update.message.photo[-1].get_file()
        received.append(bytes(await file.download_as_bytearray()))
        sizes = [(size.width, size.height) for size in update.message.photo]
        await update.message.reply_text(f"{sizes} {update.message.caption}")

    user = fake.user()
    chat = fake.private_chat(user)
    image = _image(1000, 750)
    async with polling(fake, MessageHandler(filters.PHOTO, on_photo)):
        message = fake.send_photo(user, chat, image, caption="as a knight")
        reply = await fake.next_message(chat)
    assert received == [image]
    assert reply.text == "[(90, 68), (320, 240), (800, 600), (1000, 750)] as a knight"
    assert message["photo"][-1]["file_size"] == len(image)
    assert fake.downloads == [fake.file(message["photo"][-1]["file_id"]).file_path]


async def test_get_file_refuses_files_over_20_mb(fake: FakeTelegram) -> None:
    async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.document is not None
        try:
            await update.message.document.get_file()
        except BadRequest as error:
            await update.message.reply_text(f"refused: {error.message}")

    user = fake.user()
    chat = fake.private_chat(user)
    async with polling(fake, MessageHandler(filters.Document.IMAGE, on_document)):
        fake.send_document(user, chat, _image(64, 64, "PNG"), "face.png", "image/png", file_size=25_000_000)
        reply = await fake.next_message(chat)
    assert reply.text == "refused: File is too big"
    assert fake.downloads == []


async def test_button_press_is_answered_and_the_message_edited(fake: FakeTelegram) -> None:
    async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="v1:regen:42")]])
        await update.message.reply_text("Done", reply_markup=keyboard)

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        await query.answer("Queued")
        await query.edit_message_text(f"Regenerating {query.data.rsplit(':', 1)[-1]}")

    user = fake.user()
    chat = fake.private_chat(user)
    async with polling(fake, CommandHandler("menu", menu), CallbackQueryHandler(on_press, pattern=r"^v1:regen:")):
        fake.send_text(user, chat, "/menu")
        message = await fake.next_message(chat)
        assert message.buttons == [{"text": "Again", "callback_data": "v1:regen:42"}]
        query_id = fake.press_button(user, message, "v1:regen:42")
        answer = await fake.wait_for_callback_answer(query_id)
        await fake.wait_for(lambda: message.text == "Regenerating 42")
    assert answer.text == "Queued" and not answer.show_alert
    # An edit that leaves reply_markup out drops the keyboard, as on Telegram.
    assert message.edited and message.buttons == []
    with pytest.raises(ValueError, match="no button"):
        fake.press_button(user, message, "v1:regen:42")


async def test_429_with_retry_after_is_retried_by_the_rate_limiter(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    fake.rate_limit("sendMessage", times=1, retry_after=1)
    async with polling(fake, MessageHandler(filters.TEXT, _echo), max_retries=1):
        started = time.monotonic()
        fake.send_text(user, chat, "hello")
        reply = await fake.next_message(chat, timeout=10)
        elapsed = time.monotonic() - started
    assert reply.text == "echo: hello"
    assert [call.status for call in fake.calls if call.method == "sendMessage"] == [429, 200]
    assert fake.flood_counts["sendMessage"] == 1
    assert elapsed >= 1.0
    assert len(fake.messages(chat)) == 1


async def test_blocked_chat_raises_forbidden_in_the_handler(fake: FakeTelegram) -> None:
    failures: list[Exception] = []

    async def deliver(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and context.args
        try:
            await context.bot.send_message(int(context.args[0]), "Your portrait is ready")
        except Forbidden as error:
            failures.append(error)
            await update.message.reply_text("undeliverable")

    alice, bob = fake.user("Alice"), fake.user("Bob")
    fake.block(alice)
    async with polling(fake, CommandHandler("deliver", deliver)):
        fake.send_text(bob, fake.private_chat(bob), f"/deliver {alice.id}")
        reply = await fake.next_message(bob)
    assert reply.text == "undeliverable"
    assert len(failures) == 1 and isinstance(failures[0], Forbidden)
    assert failures[0].message == "Forbidden: bot was blocked by the user"
    assert fake.messages(alice) == []


async def test_media_group_with_two_photos_records_both(fake: FakeTelegram) -> None:
    first, second = _image(640, 480), _image(480, 640, "PNG")

    async def album(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        media = [InputMediaPhoto(first, caption="Two takes"), InputMediaPhoto(second)]
        await context.bot.send_media_group(update.effective_chat.id, media)

    user = fake.user()
    chat = fake.private_chat(user)
    async with polling(fake, CommandHandler("album", album)):
        fake.send_text(user, chat, "/album")
        one = await fake.next_message(chat)
        two = await fake.next_message(chat)
    assert (one.photo, two.photo) == (first, second)
    assert one.media_group_id is not None and one.media_group_id == two.media_group_id
    assert (one.caption, two.caption) == ("Two takes", None)
    assert one.method == two.method == "sendMediaGroup"


async def test_long_poll_waits_and_returns_promptly_when_an_update_arrives(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=10))
        await fake.wait_for(lambda: fake.waiting_polls == 1)
        started = time.monotonic()
        fake.send_text(user, chat, "ping")
        updates = await asyncio.wait_for(poll, 3)
        assert time.monotonic() - started < 1.0
        assert [update.message.text for update in updates if update.message] == ["ping"]

        # With nothing queued the poll lasts its timeout; the offset confirms what was received.
        started = time.monotonic()
        assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=1) == ()
        assert 0.9 <= time.monotonic() - started < 3
        assert fake.pending_updates == []


async def test_update_queue_honours_allowed_updates_offsets_and_a_single_poller(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    async with (
        Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot,
        Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as other,
    ):
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Pick", callback_data="v1:pick:1")]])
        await bot.send_message(chat.id, "Choose", reply_markup=keyboard)
        fake.send_text(user, chat, "one")
        fake.press_button(user, fake.messages(chat)[-1], "v1:pick:1")
        fake.send_text(user, chat, "two")
        # Updates of types the bot did not ask for are dropped, as on Telegram.
        updates = await bot.get_updates(allowed_updates=["message"])
        assert [update.message.text for update in updates if update.message] == ["one", "two"]
        offset = updates[-1].update_id + 1

        # A newer getUpdates ends the one still waiting with 409 Conflict.
        poll = asyncio.create_task(bot.get_updates(offset=offset, timeout=5))
        await fake.wait_for(lambda: fake.waiting_polls == 1)
        assert await other.get_updates(offset=offset, timeout=0) == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await poll

        # An empty allowed_updates goes back to the default set, which has my_chat_member.
        fake.block(user)
        [blocked] = await bot.get_updates(offset=offset, allowed_updates=[])
        assert blocked.my_chat_member is not None
        assert blocked.my_chat_member.new_chat_member.status == "kicked"
        assert await bot.get_updates(offset=blocked.update_id + 1) == ()
        assert fake.pending_updates == []


async def test_documents_edits_replies_commands_and_flood_limits(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    png = _image(500, 400, "PNG")
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot:
        await bot.set_my_commands([BotCommand("imagine", "Make a portrait")])
        assert [command.command for command in await bot.get_my_commands()] == ["imagine"]

        sent = await bot.send_document(chat.id, png, filename="portrait.png", caption="*Done*", parse_mode="MarkdownV2")
        assert sent.document is not None and sent.document.mime_type == "image/png"
        assert sent.document.thumbnail is not None and sent.document.thumbnail.width == 320
        assert sent.caption == "Done" and [entity.type for entity in sent.caption_entities] == ["bold"]
        file = await bot.get_file(sent.document.file_id)
        assert bytes(await file.download_as_bytearray()) == png == fake.messages(chat)[-1].document

        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="v1:regen:1")]])
        edited = await bot.edit_message_caption(chat.id, sent.message_id, caption="Done: 1/1", reply_markup=keyboard)
        assert isinstance(edited, type(sent)) and edited.caption == "Done: 1/1"
        assert fake.messages(chat)[-1].buttons == [{"text": "Again", "callback_data": "v1:regen:1"}]
        await bot.edit_message_reply_markup(chat.id, sent.message_id)
        assert fake.messages(chat)[-1].buttons == [] and len(fake.messages(chat)[-1].history) == 2

        reply = await bot.send_message(chat.id, "Thanks", reply_parameters=ReplyParameters(sent.message_id))
        assert reply.reply_to_message is not None and reply.reply_to_message.message_id == sent.message_id
        too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="x" * 65)]])
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(chat.id, "Pick", reply_markup=too_long)

        fake.flood_limit(1, window=1.0)
        await bot.send_message(chat.id, "one")
        with pytest.raises(RetryAfter):
            await bot.send_message(chat.id, "two")
        assert fake.flood_counts["sendMessage"] == 1


async def test_requests_are_validated_like_telegram(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot:
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(chat.id, "x" * 4097)
        with pytest.raises(BadRequest, match="Message caption is too long"):
            await bot.send_photo(chat.id, _image(32, 32), caption="x" * 1025)
        with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
            await bot.send_photo(chat.id, _image(9000, 1500, "PNG", "L"))
        with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
            await bot.send_photo(chat.id, _image(64, 64) + b"\0" * 10_000_000)  # over 10 MB
        with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
            await bot.send_photo(chat.id, b"not an image at all")
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await bot.send_message(chat.id, "a <cat> in armour", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"Can't parse entities: character '\.' is reserved"):
            await bot.send_message(chat.id, "Done.", parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(424242, "hello")

        sent = await bot.send_message(chat.id, "Working")
        with pytest.raises(BadRequest, match="Message is not modified"):
            await bot.edit_message_text("Working", chat.id, sent.message_id)
        await bot.edit_message_text("Working 50%", chat.id, sent.message_id)
        assert fake.messages(chat)[-1].text == "Working 50%"
        assert await bot.delete_message(chat.id, sent.message_id)
        assert fake.messages(chat)[-1].deleted and fake.deleted == [(chat.id, sent.message_id)]

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.base_url}{fake.token}/sendSticker", data={"chat_id": chat.id}) as response:
            assert response.status == 404
            assert await response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with http.post(f"{fake.base_url}123:wrong/getMe") as response:
            assert response.status == 401
        # Method names are case-insensitive and JSON bodies work as well as form fields.
        payload = {"chat_id": chat.id, "text": "json body"}
        async with http.post(f"{fake.base_url}{fake.token}/SENDMESSAGE", json=payload) as response:
            body = await response.json()
            assert body["ok"] and body["result"]["text"] == "json body"


async def test_webhook_mode_pushes_updates_with_the_secret_token(fake: FakeTelegram) -> None:
    user = fake.user()
    chat = fake.private_chat(user)
    port = _free_port()
    app = _build(fake, (MessageHandler(filters.TEXT, _echo),), 0)
    await app.initialize()
    await app.start()
    assert app.updater is not None
    hook = f"http://127.0.0.1:{port}/tg"
    await app.updater.start_webhook(
        listen="127.0.0.1", port=port, url_path="tg", webhook_url=hook, secret_token="s3cret"
    )
    try:
        assert fake.webhook_url == hook
        fake.send_text(user, chat, "via hook")
        reply = await fake.next_message(chat)
        assert reply.text == "echo: via hook"
        assert [delivery.status for delivery in fake.webhook_deliveries] == [200]

        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{fake.base_url}{fake.token}/getUpdates") as response,
        ):
            assert response.status == 409
        update = {"update_id": 1, "message": fake.send_text(user, chat, "ignored")}
        await fake.wait_for(lambda: len(fake.messages(chat)) == 2)
        assert await fake.deliver_via_webhook(update, secret_token="wrong") == 403
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
