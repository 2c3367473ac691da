"""The one error type that carries a message for the user."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix or should know; ``message`` is shown to them as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
