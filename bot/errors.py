"""The two error types that end in a message: one for chat users, one for the operator at the shell."""

from __future__ import annotations


class UserError(Exception):
    """Something a chat user can fix or should know; ``message`` is shown to them as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OperatorError(Exception):
    """A start-up or command failure the operator must fix; ``message`` is one line naming the setting or the cause.

    The CLI prints it on stderr and exits non-zero, without a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
