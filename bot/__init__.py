"""Front ends and use cases: the chat bot service, its Discord and Telegram adapters, and the CLI."""
