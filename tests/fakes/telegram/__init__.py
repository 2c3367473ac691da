"""A fake Telegram Bot API on 127.0.0.1, faithful enough to drive the real python-telegram-bot."""

from tests.fakes.telegram.models import (
    CHANNEL_BOT,
    GROUP_ANONYMOUS_BOT,
    SERVICE_NOTIFICATIONS,
    ApiCall,
    BotMessage,
    CallbackAnswer,
    StoredFile,
    TgChat,
    TgUser,
    WebhookDelivery,
)
from tests.fakes.telegram.payments import PRECHECKOUT_WINDOW_S, STARS, Charge, Checkout, Invoice
from tests.fakes.telegram.protocol import (
    CALLBACK_ANSWER_LIMIT,
    CALLBACK_DATA_LIMIT,
    CAPTION_LIMIT,
    DOWNLOAD_LIMIT,
    PHOTO_RATIO_LIMIT,
    PHOTO_SIDES_LIMIT,
    PHOTO_UPLOAD_LIMIT,
    TEXT_LIMIT,
    UPLOAD_LIMIT,
)
from tests.fakes.telegram.server import FakeTelegram

__all__ = [
    "CALLBACK_ANSWER_LIMIT",
    "CALLBACK_DATA_LIMIT",
    "CAPTION_LIMIT",
    "CHANNEL_BOT",
    "DOWNLOAD_LIMIT",
    "GROUP_ANONYMOUS_BOT",
    "PHOTO_RATIO_LIMIT",
    "PHOTO_SIDES_LIMIT",
    "PHOTO_UPLOAD_LIMIT",
    "PRECHECKOUT_WINDOW_S",
    "SERVICE_NOTIFICATIONS",
    "STARS",
    "TEXT_LIMIT",
    "UPLOAD_LIMIT",
    "ApiCall",
    "BotMessage",
    "CallbackAnswer",
    "Charge",
    "Checkout",
    "FakeTelegram",
    "Invoice",
    "StoredFile",
    "TgChat",
    "TgUser",
    "WebhookDelivery",
]
