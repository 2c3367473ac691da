"""End-to-end tests of the Telegram front end."""
