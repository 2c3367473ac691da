"""The two error types that end in a message: one for chat users, one for the operator at the shell."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Something a chat user can fix or should know; ``message`` is shown to them as it is, with ``buttons``
    (the service's ``Button`` values, such as agreeing to the privacy notice) where the front end can show them.
    Typed loosely: this module is below the service, which the worker process never imports."""

    def __init__(self, message: str, buttons: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.buttons = buttons


class OperatorError(Exception):
    """A start-up or command failure the operator must fix; ``message`` is one line naming the setting or the cause.

    The CLI prints it on stderr and exits non-zero, without a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
