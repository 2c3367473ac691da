"""The whole `likeness run` wiring against a fake Telegram Bot API and a fake fal.ai, for end-to-end tests."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.settings import Settings
from bot.wiring.engine import EngineParts, open_engine
from bot.wiring.service import serve
from storage import jobs, users
from storage.models import Job, User
from tests.fakes import fal
from tests.fakes.fal import FakeFal, FalScript
from tests.fakes.telegram import BotMessage, FakeTelegram, TgChat, TgUser

ADMIN_ID = 4242


def is_status(message: BotMessage) -> bool:
    """A job's status message: sent with a Cancel button ("Queued…" or, if a worker was quicker, "Rendering…")."""
    first = message.history[0] if message.history else message.raw
    rows = (first.get("reply_markup") or {}).get("inline_keyboard", [])
    return any(str(button.get("callback_data", "")).startswith("cx:") for row in rows for button in row)


def face_photo(size: tuple[int, int] = (400, 480), color: str = "peachpuff") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


@dataclass
class Stack:
    telegram: FakeTelegram
    fal: FakeFal
    settings: Settings
    runtime: EngineParts | None = None
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    _cursor: dict[int, int] = field(default_factory=dict)

    async def start(self, *, webhook: bool = False) -> None:
        self._stop = asyncio.Event()

        async def run() -> None:
            async with open_engine(self.settings) as runtime:
                self.runtime = runtime
                await serve(runtime, self._stop)  # type: ignore[arg-type]

        self._task = asyncio.create_task(run())
        if webhook:
            started = self.telegram.wait_for(lambda: self.telegram.webhook_url is not None, timeout=10)
        else:
            started = self.telegram.wait_for(lambda: self.telegram.waiting_polls > 0, timeout=10)
        # The service may also fail to start: its error then comes out here.
        waiter = asyncio.ensure_future(started)
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            waiter.cancel()
            self._task.result()
        await waiter

    async def stop(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        await asyncio.wait_for(self._task, 20)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def person(self, name: str = "Ann", user_id: int | None = None) -> tuple[TgUser, TgChat]:
        user = self.telegram.user(name)
        if user_id is not None:
            user = TgUser(user_id, name, None, None, "en")
        return user, self.telegram.private_chat(user)

    async def reply_to(self, chat: TgChat, predicate: Any = None, timeout: float = 15) -> BotMessage:  # noqa: ASYNC109
        """The bot's next message in this chat (after the last one this returned) matching ``predicate``.

        A cursor per chat, not a snapshot taken now, so a reply that arrives before the test asks for it
        is still found."""
        after = self._cursor.get(chat.id, 0)

        def found() -> BotMessage | None:
            for message in self.telegram.messages(chat):
                if message.message_id > after and (predicate is None or predicate(message)):
                    return message
            return None

        message = await self.telegram.wait_for(found, timeout=timeout)
        self._cursor[chat.id] = message.message_id
        return message

    async def photo_result(self, chat: TgChat, timeout: float = 15) -> BotMessage:  # noqa: ASYNC109
        """The bot's latest photo in this chat; later replies are looked for after it."""
        message = await self.telegram.wait_for(
            lambda: next((m for m in reversed(self.telegram.messages(chat)) if m.photo is not None), None),
            timeout=timeout,
        )
        self._cursor[chat.id] = max(self._cursor.get(chat.id, 0), message.message_id)
        return message

    async def user_row(self, user: TgUser) -> User | None:
        assert self.runtime is not None
        return await self.runtime.db.read(users.find_user, platform="telegram", platform_user_id=str(user.id))

    async def job(self, job_id: str) -> Job | None:
        assert self.runtime is not None
        return await self.runtime.db.read(jobs.get, job_id=job_id)

    async def settled(self, job_id: str, delivery: str = "delivered", timeout: float = 15) -> Job:  # noqa: ASYNC109
        """The job once its delivery reached ``delivery``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.job(job_id)
            if job is not None and job.delivery_state == delivery:
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{job_id} never reached delivery state {delivery}: {job}")
            await asyncio.sleep(0.05)


def stack_settings(
    tmp_path: Path,
    telegram: FakeTelegram,
    fake_fal: FakeFal,
    *,
    telegram_extra: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "route": ["fal-flux-pulid"],
        "admins": [f"telegram:{ADMIN_ID}"],
        "metrics": {"address": ""},
        "telegram": {
            "token": telegram.token,
            "base_url": telegram.base_url,
            "base_file_url": telegram.base_file_url,
            **(telegram_extra or {}),
        },
        "fal": {"key": fal.KEY, "base_url": fake_fal.url},
        "queue": {"lease_s": 2, "heartbeat_s": 0.5},
        # A stop hands running jobs back at once (the restart tests resume them), rather than draining.
        "dispatch": {"poll_s": 0.1, "drain_s": 0},
        # Plain colour photos stand in for faces here: the face judge and the privacy notice are tested with
        # real photos in test_telegram_faces.py.
        "judge": {"enabled": False},
        "privacy": {"consent": False},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def telegram_stack(
    tmp_path: Path, *, telegram_extra: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as exits:
        telegram = await exits.enter_async_context(FakeTelegram())
        fake_fal = await exits.enter_async_context(fal.start_fal())
        fake_fal.script = FalScript(queue_ticks=0, run_ticks=0)
        stack = Stack(
            telegram, fake_fal, stack_settings(tmp_path, telegram, fake_fal, telegram_extra=telegram_extra, **overrides)
        )
        await stack.start(webhook=bool(telegram_extra and telegram_extra.get("webhook_url")))
        try:
            yield stack
        finally:
            if stack._task is not None and not stack._task.done():
                await stack.stop()
