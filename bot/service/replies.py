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
    PRIVACY = "pv"  # argument: "yes", agreeing to the privacy notice
    CONFIRM = "ok"  # argument: the id of a costly job awaiting confirmation
    DECLINE = "no"  # argument: the same
    LANGUAGE = "ln"  # argument: a language tag, or "auto" for the platform's
    RERUN = "rn"  # argument: a job id; the same request again with a new seed
    OPEN = "op"  # argument: a job id; its result shown again


@dataclass(frozen=True)
class Button:
    label: str
    action: Action
    argument: str = ""  # a job id or a page; short, so it fits Telegram's 64-byte callback data
    row: int = 0  # buttons of one row are shown side by side, rows in order

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
class MenuEntry:
    label: str  # the entry as the menu lists it (at most 100 characters)
    value: str  # the menu action's argument when chosen
    buttons: tuple[Button, ...] = ()  # what can be done with the entry, where a front end shows buttons instead


@dataclass(frozen=True)
class Menu:
    """A choice among entries (a page of history): a select menu where the platform has one, else each
    entry's buttons."""

    placeholder: str
    action: Action
    entries: tuple[MenuEntry, ...]


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[Button, ...] = ()
    images: tuple[ReplyImage, ...] = ()
    menu: Menu | None = None


@dataclass(frozen=True)
class Submitted:
    """A queued job and the status reply to show for it."""

    job_id: str
    reply: Reply
    duplicate: bool = False
    pending: bool = False  # not queued yet: the reply asks the user to confirm its cost


class ReplyTarget(Protocol):
    """Where a front end answers a job: its own frozen dataclass, kept with the job as JSON.

    The JSON carries a "platform" key naming the front end that can read it back, and an "nsfw" key set
    true where the chat is marked age-restricted.
    """

    def to_json(self) -> dict[str, Any]: ...
