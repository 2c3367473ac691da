"""Neutral replies: what the service wants shown, for each front end to render in its own way."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Action(StrEnum):
    """What a button does; front ends put the action and its argument into the button's data."""

    REROLL = "rr"
    VARY = "va"
    CANCEL = "cx"
    HISTORY = "hi"  # argument: page number
    FORGET = "fg"  # argument: "yes" or "no"
    CONFIRM = "ok"  # argument: the id of a costly job awaiting confirmation
    DECLINE = "no"  # argument: the same


@dataclass(frozen=True)
class Button:
    label: str
    action: Action
    argument: str = ""  # a job id or a page; short, so it fits Telegram's 64-byte callback data

    @property
    def data(self) -> str:
        return f"{self.action}:{self.argument}"

    @staticmethod
    def parse(data: str) -> tuple[Action, str] | None:
        action, sep, argument = data.partition(":")
        try:
            return (Action(action), argument) if sep else None
        except ValueError:
            return None


@dataclass(frozen=True)
class ReplyImage:
    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    nsfw: bool = False
    filename: str = "image.jpg"


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[Button, ...] = ()
    images: tuple[ReplyImage, ...] = ()


@dataclass(frozen=True)
class Submitted:
    """A queued job and the status reply to show for it."""

    job_id: str
    reply: Reply
    duplicate: bool = False
    pending: bool = False  # not queued yet: the reply asks the user to confirm its cost


class ReplyTarget(Protocol):
    """Where a front end answers a job: its own frozen dataclass, kept with the job as JSON.

    The JSON carries a "platform" key naming the front end that can read it back.
    """

    def to_json(self) -> dict[str, Any]: ...
