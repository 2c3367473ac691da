"""Telegram: translates updates into service calls and renders neutral replies. No logic of its own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import re
import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from telegram import (
    CallbackQuery,
    Chat,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    LabeledPrice,
    Message,
    ReplyParameters,
    Update,
    User,
)
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    TypeHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from bot import i18n, messages
from bot.errors import OperatorError, UserError
from bot.frontend import DeliveryDeferred, DeliveryParts, Undeliverable
from bot.intake import MAX_BYTES
from bot.service.actors import Actor
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Button, Menu, Reply, ReplyImage
from bot.service.shop import STARS, RefundRefused
from bot.service.use_cases import LikenessService
from bot.settings import TelegramSettings, parse_address
from bot.telegram.albums import AlbumCollector
from bot.telegram.target import PLATFORM, TelegramTarget

log = logging.getLogger(__name__)

PHOTO_MAX_BYTES = 10 * 1024 * 1024  # sendPhoto's limits; beyond them results go as documents
PHOTO_MAX_SIDES = 10_000
PHOTO_MAX_RATIO = 20
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what setWebhook accepts as secret_token
# Only new messages: an edit of a message that was a command must not run it again.
NEW_MESSAGES = filters.UpdateType.MESSAGE
# Sent on behalf of a chat (an anonymous group admin, a user posting as a channel, a linked channel's post):
# "from" is then a placeholder that many people share, so there is no one person to charge or answer for.
ON_BEHALF_OF_CHAT = NEW_MESSAGES & filters.SenderChat.ALL
# Buttons that act on whoever presses them; in a group anyone can press, so they carry who asked.
OWNED_ACTIONS = (Action.HISTORY, Action.FORGET, Action.PRIVACY)
Context = ContextTypes.DEFAULT_TYPE


def _actor(user: User | None, chat: Chat | None) -> Actor:
    assert user is not None
    return Actor(
        PLATFORM,
        str(user.id),
        user.full_name or "",
        chat_id=str(chat.id) if chat else None,
        locale=user.language_code,
    )


def _sender(message: Message) -> Actor:
    if message.sender_chat is not None or message.from_user is None:
        raise UserError(messages.TELEGRAM_SENT_AS_CHAT)
    return _actor(message.from_user, message.chat)


def _reply_parameters(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id, allow_sending_without_reply=True) if message_id else None


def _keyboard(
    buttons: tuple[Button, ...], owner: int | None = None, menu: Menu | None = None
) -> InlineKeyboardMarkup | None:
    """A menu's entries as rows of their buttons, then the buttons by row; ``owner`` is put into the data of
    buttons that act on whoever presses them."""
    rows = [list(entry.buttons) for entry in menu.entries if entry.buttons] if menu is not None else []
    for row in sorted({b.row for b in buttons}):
        rows.append([b for b in buttons if b.row == row])
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=_data(b, owner)) for b in row] for row in rows]
    )


def _data(button: Button, owner: int | None) -> str:
    return f"{button.data}:{owner}" if owner is not None and button.action in OWNED_ACTIONS else button.data


def _owner_of(argument: str) -> tuple[str, str]:
    """An owned button's argument and the id of the user it belongs to ("" if it carries none)."""
    argument, _, owner = argument.partition(":")
    return argument, owner


def _fits_as_photo(image: ReplyImage) -> bool:
    long_side, short_side = max(image.width, image.height), max(1, min(image.width, image.height))
    return (
        len(image.data) <= PHOTO_MAX_BYTES
        and image.width + image.height <= PHOTO_MAX_SIDES
        and long_side / short_side <= PHOTO_MAX_RATIO
    )


class TelegramFrontEnd:
    platform = PLATFORM

    def __init__(self, settings: TelegramSettings, service: LikenessService) -> None:
        assert settings.token is not None
        if settings.webhook_url:
            _check_webhook_secret(settings)
        self.settings = settings
        self.service = service
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(settings.token.get_secret_value())
            .base_url(settings.base_url)
            .base_file_url(settings.base_file_url)
            .rate_limiter(AIORateLimiter(overall_max_rate=settings.max_messages_per_s, max_retries=3))
            .concurrent_updates(64)
            .build()
        )
        self._albums: AlbumCollector[Message] = AlbumCollector(self._album)
        self._handlers()

    # --- life cycle -------------------------------------------------------------------------------

    def _handlers(self) -> None:
        add = self.app.add_handler
        simple: dict[str, Callable[[Update, Context], Coroutine[Any, Any, None]]] = {
            "start": self._start,
            "help": self._help,
            "imagine": self._imagine_command,
            "face": self._face,
            "history": self._history,
            "quota": self._quota,
            "cancel": self._cancel,
            "forget": self._forget,
            "privacy": self._privacy,
            "admin": self._admin,
            "buy": self._buy,
            "language": self._language,
            "styles": self._styles,
            "terms": self._terms,
            "paysupport": self._paysupport,
        }
        # Group -2 sees every update first: its user's language holds for the rest of its handling.
        add(TypeHandler(Update, self._use_language), group=-2)
        # Group -1 sees every update next and ends its handling there.
        add(CommandHandler(list(simple), self._refuse_chat_sender, filters=ON_BEHALF_OF_CHAT), group=-1)
        add(MessageHandler(ON_BEHALF_OF_CHAT & (filters.PHOTO | filters.Document.ALL), self._refuse_chat_sender), -1)
        # Channel posts and edits match none of these: they are left alone.
        for name, callback in simple.items():
            add(CommandHandler(name, callback, filters=NEW_MESSAGES))
        add(MessageHandler(NEW_MESSAGES & (filters.PHOTO | filters.Document.ALL), self._photo))
        add(CallbackQueryHandler(self._button))
        add(PreCheckoutQueryHandler(self._pre_checkout))
        add(MessageHandler(filters.SUCCESSFUL_PAYMENT, self._paid))
        self.app.add_error_handler(self._error)

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()
        assert self.app.updater is not None
        if self.settings.webhook_url:
            address = parse_address(self.settings.webhook_listen)
            assert address is not None and self.settings.webhook_secret is not None  # checked by __init__
            host, port = address
            secret = self.settings.webhook_secret.get_secret_value()
            await self.app.updater.start_webhook(
                listen=host,
                port=port,
                url_path="telegram",
                webhook_url=self.settings.webhook_url,
                secret_token=secret,
                allowed_updates=Update.ALL_TYPES,
            )
        else:
            await self.app.updater.start_polling(allowed_updates=Update.ALL_TYPES, poll_interval=0.0)

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        # No more updates come in; albums being handled still need the bot, so they finish first.
        await self._albums.close()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- rendering --------------------------------------------------------------------------------

    async def _send(
        self, chat_id: int, reply: Reply, reply_to: int | None = None, *, owner: int | None = None
    ) -> Message:
        sent: Message = await self.app.bot.send_message(
            chat_id,
            reply.text,
            reply_markup=_keyboard(reply.buttons, owner, reply.menu),
            reply_parameters=_reply_parameters(reply_to),
        )
        return sent

    async def _answer(self, message: Message, reply: Reply) -> Message:
        """Reply to a user's message; buttons that act on whoever presses them belong to its sender."""
        owner = message.from_user.id if message.from_user is not None and message.sender_chat is None else None
        return await self._send(message.chat_id, reply, message.message_id, owner=owner)

    def parse_target(self, data: Mapping[str, Any]) -> TelegramTarget:
        return TelegramTarget.from_json(data)

    async def deliver(
        self, job_id: str, target: TelegramTarget, reply: Reply, parts: DeliveryParts | None = None
    ) -> str:
        chat_id, reply_to = target.chat_id, target.message_id
        parts = parts or DeliveryParts()
        try:
            if not reply.images:
                await parts.send([lambda: self._send(chat_id, reply, reply_to)])
            else:
                await parts.send(self._image_messages(chat_id, reply, reply_to))
        except Forbidden as exc:  # 403: the user blocked the bot, or it was removed from the group
            raise Undeliverable(f"telegram refused: {exc.message}") from None
        except BadRequest as exc:
            if "chat not found" in exc.message.lower():
                raise Undeliverable(f"telegram refused: {exc.message}") from None
            raise
        except RetryAfter as exc:  # the rate limiter's own retries ran out
            with warnings.catch_warnings():  # an int now, a timedelta in a later release: both are read
                warnings.simplefilter("ignore", PTBDeprecationWarning)
                wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
            raise DeliveryDeferred(f"telegram flood control: {exc.message}", retry_after_s=seconds) from None
        except NetworkError as exc:  # 5xx, timeouts, connection errors: Telegram is unavailable for now
            raise DeliveryDeferred(f"telegram unavailable: {exc.message}") from None
        if target.status_message_id:
            try:
                await self.app.bot.delete_message(chat_id, target.status_message_id)
            except TelegramError:
                log.debug("status message already gone", extra={"job_id": job_id})
        return "reply"

    def _image_messages(
        self, chat_id: int, reply: Reply, reply_to: int | None
    ) -> list[Callable[[], Coroutine[Any, Any, object]]]:
        """The messages that carry a result's images, in order (the same order on every try)."""
        bot, reply_parameters = self.app.bot, _reply_parameters(reply_to)
        photos = [image for image in reply.images if _fits_as_photo(image)]
        documents = [image for image in reply.images if not _fits_as_photo(image)]
        keyboard = _keyboard(reply.buttons)
        if len(photos) == 1 and not documents:
            image = photos[0]
            return [
                lambda: bot.send_photo(
                    chat_id,
                    image.data,
                    caption=reply.text,
                    reply_markup=keyboard,
                    reply_parameters=reply_parameters,
                    has_spoiler=image.nsfw,
                )
            ]
        sends: list[Callable[[], Coroutine[Any, Any, object]]] = []
        if len(photos) > 1:
            media = [
                InputMediaPhoto(image.data, caption=reply.text if index == 0 else None, has_spoiler=image.nsfw)
                for index, image in enumerate(photos)
            ]
            sends.append(lambda: bot.send_media_group(chat_id, media, reply_parameters=reply_parameters))
        for image in documents:
            sends.append(
                functools.partial(
                    bot.send_document,
                    chat_id,
                    image.data,
                    filename=image.filename,
                    caption=reply.text,
                    reply_parameters=reply_parameters,
                )
            )
        if keyboard is not None:  # albums and documents cannot carry buttons of their own
            sends.append(lambda: bot.send_message(chat_id, messages.BUTTONS_BELOW, reply_markup=keyboard))
        return sends

    async def show_progress(self, job_id: str, target: TelegramTarget, text: str) -> None:
        if not target.status_message_id:
            return
        keyboard = _keyboard((Button(messages.CANCEL_BUTTON, Action.CANCEL, job_id),))
        try:
            await self.app.bot.edit_message_text(
                text, chat_id=target.chat_id, message_id=target.status_message_id, reply_markup=keyboard
            )
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                raise

    # --- commands ---------------------------------------------------------------------------------

    async def _refuse_chat_sender(self, update: Update, context: Context) -> None:
        message = _message(update)
        log.info("refused a message sent on behalf of chat %s", message.sender_chat.id if message.sender_chat else "?")
        await self._send(message.chat_id, Reply(messages.TELEGRAM_SENT_AS_CHAT), message.message_id)
        raise ApplicationHandlerStop

    async def _start(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, await self.service.account.start(_sender(message)))

    async def _help(self, update: Update, context: Context) -> None:
        await self._answer(_message(update), self.service.account.help())

    async def _imagine_command(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._imagine(message, " ".join(context.args or []), [])

    async def _photo(self, update: Update, context: Context) -> None:
        message = _message(update)
        if message.media_group_id is None:
            await self._photo_messages([message])
        elif not self._albums.add(str(message.media_group_id), message):
            log.info("part of album %s came after the album was taken; ignored", message.media_group_id)

    async def _album(self, parts: list[Message]) -> None:
        """A whole album, handed over by the collector outside any update handler: its errors are told here."""
        parts = sorted(parts, key=lambda part: part.message_id)
        try:
            await self._photo_messages(parts)
        except Exception as error:
            await self._tell_error(error, parts[0], None)

    async def _photo_messages(self, photos: list[Message]) -> None:
        caption = next((m.caption for m in photos if m.caption), "") or ""
        head = caption.split(maxsplit=1)
        command = head[0].split("@")[0].lower() if head else ""
        if command == "/face":
            await self._face_words(photos[0], caption.split()[1:], photos)
            return
        if command == "/imagine":
            caption = head[1] if len(head) > 1 else ""
        elif command.startswith("/"):
            return  # another command's caption: not a render request
        if not caption.strip():
            await self._answer(photos[0], Reply(messages.PHOTO_NEEDS_CAPTION))
            return
        await self._imagine(photos[0], caption, photos)

    async def _imagine(self, message: Message, text: str, photos: list[Message]) -> None:
        data = tuple([await self._download(m) for m in photos])
        target = TelegramTarget(message.chat_id, message.message_id)
        given = ImagineInput(
            event_id=f"tg:{message.chat_id}:{message.message_id}", text=text, photos=data, reply_target=target
        )
        submitted = await self.service.imagine.submit(_sender(message), given)
        if submitted.duplicate:
            return
        status = await self._send(message.chat_id, submitted.reply, message.message_id)
        if not submitted.pending:  # a costly job is queued only once its user confirms
            await self.service.imagine.attach_status(submitted.job_id, target.with_status(status.message_id))

    async def _download(self, message: Message) -> bytes:
        if message.photo:
            media: Any = message.photo[-1]
        elif message.document is not None:
            media = message.document
        else:
            raise UserError(messages.PHOTO_NOT_IMAGE)
        if media.file_size and media.file_size > MAX_BYTES:
            raise UserError(messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024)))
        try:
            file = await media.get_file()
            return bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise UserError(messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024))) from None
            raise

    async def _face(self, update: Update, context: Context) -> None:
        message = _message(update)
        replied = message.reply_to_message
        photos = [replied] if replied is not None and (replied.photo or replied.document) else []
        await self._face_words(message, list(context.args or []), photos)

    async def _face_words(self, message: Message, words: list[str], photos: list[Message]) -> None:
        actor, faces = _sender(message), self.service.faces
        sub = words[0].lower() if words else ""
        name = words[1] if len(words) > 1 else ""
        if sub == "save" and name:
            data = tuple([await self._download(m) for m in photos])
            reply = await faces.save(actor, name, data)
        elif sub == "list":
            reply = await faces.show(actor)
        elif sub == "use" and name:
            reply = await faces.use(actor, name)
        elif sub == "delete" and name:
            reply = await faces.delete(actor, name)
        elif sub == "delete-all":
            reply = await faces.delete(actor, None)
        else:
            reply = Reply(messages.FACE_USAGE)
        await self._answer(message, reply)

    async def _history(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, await self.service.account.history(_sender(message)))

    async def _quota(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, await self.service.account.quota(_sender(message)))

    async def _cancel(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, await self.service.imagine.cancel(_sender(message)))

    async def _forget(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, self.service.account.forget(_sender(message)))

    async def _privacy(self, update: Update, context: Context) -> None:
        message = _message(update)
        await self._answer(message, await self.service.account.privacy(_sender(message)))

    async def _admin(self, update: Update, context: Context) -> None:
        message = _message(update)
        actor = _sender(message)
        args = list(context.args or [])
        admin = self.service.admin
        sub = args[0].lower() if args else ""
        match sub, args[1:]:
            case "grant", [user, amount]:
                text = await admin.grant(actor, user, amount)
            case "limit", [user, jobs]:
                text = await admin.limit(actor, user, jobs)
            case "ban", [user, *reason]:
                text = await admin.ban(actor, user, " ".join(reason))
            case "unban", [user]:
                text = await admin.ban(actor, user, banned=False)
            case "stats", []:
                text = await admin.stats(actor)
            case "pause", reason:
                text = await admin.pause(actor, " ".join(reason))
            case "resume", []:
                text = await admin.pause(actor, paused=False)
            case "safety", []:
                text = await admin.safety(actor)
            case "safety", [policy]:
                text = await admin.safety(actor, policy)
            case "refund", [charge_id]:
                text = await self.service.shop.refund(actor, charge_id, self._refund_stars)
            case "refund", [charge_id, "force"]:
                text = await self.service.shop.refund(actor, charge_id, self._refund_stars, force=True)
            case "images", []:
                text = await admin.images(await self._group_admin(message, actor))
            case "images", [cap]:
                text = await admin.images(await self._group_admin(message, actor), cap)
            case _:
                admin.require(actor)
                text = messages.ADMIN_USAGE
        await self._answer(message, Reply(text))

    # --- selling credits (Telegram Stars) ---------------------------------------------------------

    async def _buy(self, update: Update, context: Context) -> None:
        message = _message(update)
        invoices = self.service.shop.invoices()
        if not invoices:
            await self._answer(message, self.service.shop.no_shop())
            return
        await self._answer(message, Reply(messages.BUY_INTRO))
        for invoice in invoices:
            # Stars: currency XTR and no payment provider token.
            await self.app.bot.send_invoice(
                message.chat_id,
                invoice.title,
                invoice.description,
                invoice.payload,
                STARS,
                [LabeledPrice(invoice.title, invoice.stars)],
            )

    async def _use_language(self, update: Update, context: Context) -> None:
        """Answer this update in its user's language: their /language choice, else their app's."""
        user = update.effective_user
        if user is not None and not user.is_bot:
            i18n.use(await self.service.users.language(_actor(user, update.effective_chat)))

    async def _language(self, update: Update, context: Context) -> None:
        message = _message(update)
        actor = _sender(message)
        if context.args:
            reply = await self.service.languages.choose(actor, " ".join(context.args))
        else:
            reply = await self.service.languages.show(actor)
        await self._answer(message, reply)

    async def _styles(self, update: Update, context: Context) -> None:
        await self._answer(_message(update), self.service.styles.listing())

    async def _terms(self, update: Update, context: Context) -> None:
        await self._answer(_message(update), self.service.shop.terms())

    async def _paysupport(self, update: Update, context: Context) -> None:
        await self._answer(_message(update), self.service.shop.support())

    async def _pre_checkout(self, update: Update, context: Context) -> None:
        """Telegram cancels the payment unless this is answered within ten seconds: a couple of reads."""
        query = update.pre_checkout_query
        assert query is not None
        actor = _actor(query.from_user, None)
        try:
            refusal = await self.service.shop.pre_checkout(
                actor, query.invoice_payload, query.currency, query.total_amount
            )
        except Exception:
            log.exception("pre-checkout %s failed; declined", query.id)
            refusal = messages.INTERNAL_ERROR
        if refusal is None:
            await query.answer(ok=True)
        else:
            await query.answer(ok=False, error_message=refusal)

    async def _paid(self, update: Update, context: Context) -> None:
        message = _message(update)
        payment = message.successful_payment
        assert payment is not None and message.from_user is not None
        reply = await self.service.shop.paid(
            _actor(message.from_user, message.chat),
            charge_id=payment.telegram_payment_charge_id,
            provider_charge_id=payment.provider_payment_charge_id,
            payload=payment.invoice_payload,
            currency=payment.currency,
            amount=payment.total_amount,
        )
        if reply is not None:  # None: this payment was credited before
            await self._answer(message, reply)

    async def _group_admin(self, message: Message, actor: Actor) -> Actor:
        """The actor, marked as managing this group when Telegram says they are one of its administrators."""
        if message.chat.type not in (Chat.GROUP, Chat.SUPERGROUP):
            return actor
        member = await self.app.bot.get_chat_member(message.chat_id, int(actor.user_id))
        manages = member.status in (ChatMember.OWNER, ChatMember.ADMINISTRATOR)
        return dataclasses.replace(actor, manages_guild=manages)

    async def _refund_stars(self, user_id: str, charge_id: str) -> None:
        try:
            await self.app.bot.refund_star_payment(int(user_id), charge_id)
        except BadRequest as exc:
            raise RefundRefused(exc.message, already="CHARGE_ALREADY_REFUNDED" in exc.message.upper()) from None

    async def notify(self, user_id: str, text: str) -> None:
        """Write to a user in their private chat with the bot (its id is theirs)."""
        await self.app.bot.send_message(int(user_id), text)

    # --- buttons ----------------------------------------------------------------------------------

    async def _button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        assert query is not None
        parsed = Button.parse(query.data or "")
        message = query.message
        if parsed is None or not isinstance(message, Message):
            await query.answer(messages.BUTTON_EXPIRED)
            return
        action, argument = parsed
        actor = _actor(query.from_user, message.chat)
        if action in OWNED_ACTIONS:
            argument, owner = _owner_of(argument)
            # A button without an owner (sent before they carried one) is safe only where one person sees it.
            if owner != actor.user_id and (owner or message.chat.type != Chat.PRIVATE):
                await query.answer(messages.NOT_YOUR_BUTTONS, show_alert=True)
                return
        # Each use case runs before the query is answered, so a refusal reaches the presser: the error
        # handler answers the query with it.
        if action in (Action.REROLL, Action.VARY):
            target = TelegramTarget(message.chat_id, message.message_id)
            submitted = await self.service.imagine.rerun(actor, f"tg:cb:{query.id}", action, argument, target)
            await query.answer()
            if not submitted.duplicate:
                status = await self._send(message.chat_id, submitted.reply, message.message_id)
                await self.service.imagine.attach_status(submitted.job_id, target.with_status(status.message_id))
        elif action is Action.CANCEL:
            reply = await self.service.imagine.cancel(actor, argument)
            await query.answer(reply.text)
        elif action is Action.HISTORY:
            page = int(argument) if argument.isdecimal() and len(argument) <= 6 else 0  # else forged: page one
            reply = await self.service.account.history(actor, page)
            await _edit(message, reply.text, _keyboard(reply.buttons, query.from_user.id, reply.menu))
            await query.answer()
        elif action is Action.FORGET:
            reply = await self.service.account.forget_confirmed(actor, argument == "yes")
            await _edit(message, reply.text, None)
            await query.answer()
        elif action is Action.LANGUAGE:
            reply = await self.service.languages.choose(actor, argument)
            await _edit(message, reply.text, None)
            await query.answer()
        elif action is Action.RERUN:
            target = TelegramTarget(message.chat_id, message.message_id)
            submitted = await self.service.imagine.rerun(actor, f"tg:cb:{query.id}", action, argument, target)
            await query.answer()
            if not submitted.duplicate:
                status = await self._send(message.chat_id, submitted.reply, message.message_id)
                await self.service.imagine.attach_status(submitted.job_id, target.with_status(status.message_id))
        elif action is Action.OPEN:
            reply = await self.service.account.open(actor, argument)
            await query.answer()
            if reply.images:
                await DeliveryParts().send(self._image_messages(message.chat_id, reply, message.message_id))
            else:
                await self._send(message.chat_id, reply, message.message_id)
        elif action is Action.PRIVACY:
            reply = await self.service.account.accept_privacy(actor)
            await _edit(message, reply.text, None)
            await query.answer()
        elif action is Action.CONFIRM:
            # The message asking becomes the job's status message, answering the user's request.
            asked = message.reply_to_message
            target = TelegramTarget(message.chat_id, asked.message_id if asked else None, message.message_id)
            submitted = await self.service.imagine.confirm(actor, argument, target)
            await query.answer()
            await _edit(message, submitted.reply.text, _keyboard(submitted.reply.buttons))
        elif action is Action.DECLINE:
            reply = await self.service.imagine.decline(actor, argument)
            await _edit(message, reply.text, None)
            await query.answer()

    # --- errors -----------------------------------------------------------------------------------

    async def _error(self, update: object, context: Context) -> None:
        """The error handler for everything an update handler raises."""
        error = context.error
        if not isinstance(update, Update):
            log.error("update handling failed", exc_info=error)
            return
        if error is None:
            return
        await self._tell_error(error, update.effective_message, update.callback_query, update.update_id)

    async def _tell_error(
        self,
        error: BaseException,
        message: Message | None,
        query: CallbackQuery | None,
        update_id: int | None = None,
    ) -> None:
        """A UserError's message, or a generic apology with the cause logged; as an alert for a button."""
        buttons: tuple[Button, ...] = ()
        if isinstance(error, UserError):
            text, buttons = error.message, error.buttons
        else:
            log.error("update %s failed", update_id, exc_info=error)
            text = messages.INTERNAL_ERROR
        try:
            if query is not None:
                try:
                    await query.answer(text[:200], show_alert=True)
                    return
                except BadRequest:  # answered already, or too old to answer: say it in the chat instead
                    if message is None:
                        raise
            if message is not None:
                await self._answer(message, Reply(text, buttons))
        except TelegramError:
            log.warning("could not tell the user about an error", exc_info=True)


def _message(update: Update) -> Message:
    message = update.effective_message
    assert message is not None
    return message


async def _edit(message: Message, text: str, keyboard: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=keyboard)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():  # a second press on the same button
            raise


def _check_webhook_secret(settings: TelegramSettings) -> None:
    """Without the secret anyone who can reach the webhook can post forged updates, admin commands included."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not secret:
        raise OperatorError(
            "LIKENESS_TELEGRAM__WEBHOOK_SECRET: webhook mode (LIKENESS_TELEGRAM__WEBHOOK_URL) needs a secret token,"
            " 1-256 of A-Z a-z 0-9 _ -"
        )
    if not WEBHOOK_SECRET.fullmatch(secret):
        raise OperatorError("LIKENESS_TELEGRAM__WEBHOOK_SECRET: use 1-256 of A-Z a-z 0-9 _ - (Telegram's rule)")
