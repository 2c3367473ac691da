"""The Telegram front end (python-telegram-bot)."""
