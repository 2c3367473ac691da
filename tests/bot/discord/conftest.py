"""The Discord front end's test stack: the fake Discord and fal.ai servers, and `likeness run`'s own wiring."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import Connection

import bot.discord.frontend
from bot.settings import Settings
from bot.wiring.engine import EngineParts, open_engine
from bot.wiring.service import serve
from storage import jobs, users
from storage import tables as t
from storage.models import Job, User
from tests.fakes.discord import FakeDiscord, FakeUser
from tests.fakes.fal import KEY as FAL_KEY
from tests.fakes.fal import FakeFal, FalScript, start_fal

FOLLOWUP = "/webhooks/{application_id}/{interaction_token}"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"


def face_png(side: int = 320) -> bytes:
    """A photo big enough for the intake (at least 256 px on the short side)."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 150, 120)).save(out, format="PNG")
    return out.getvalue()


def ledger_of(*, session: Connection, job_id: str) -> list[tuple[str, int]]:
    rows = session.execute(select(t.ledger.c.kind, t.ledger.c.amount).where(t.ledger.c.job_id == job_id))
    return sorted((str(kind), int(amount)) for kind, amount in rows)


def audit_of(*, session: Connection, target: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(t.audit_log.c.actor, t.audit_log.c.action)
        .where(t.audit_log.c.target == target)
        .order_by(t.audit_log.c.id)
    )
    return [(str(actor), str(action)) for actor, action in rows]


@dataclass
class Stack:
    """The fakes, the settings `likeness run` would read, and the running service when one is up."""

    discord: FakeDiscord
    fal: FakeFal
    settings: Settings
    runtime: EngineParts | None = None

    @property
    def db(self) -> Any:
        assert self.runtime is not None
        return self.runtime.db

    @contextlib.asynccontextmanager
    async def serving(self, settings: Settings | None = None) -> AsyncIterator[EngineParts]:
        """`likeness run` in a task: open the runtime on the data directory and serve until the block ends."""
        connections = len(self.discord.connections)
        async with open_engine(settings or self.settings) as runtime:
            stop = asyncio.Event()
            task = asyncio.create_task(serve(runtime, stop))

            def connected() -> bool:
                fresh = self.discord.connections[connections:]
                return any(c.kind == "identify" and not c.closed for c in fresh)

            waiter = asyncio.ensure_future(self.discord.wait_for(connected, timeout=10))
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                waiter.cancel()
                task.result()  # the service stopped while starting: raise its error here
            await waiter
            self.runtime = runtime
            try:
                yield runtime
            finally:
                self.runtime = None
                stop.set()
                await asyncio.wait_for(task, 10)

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None, job_id
        return found

    async def delivered(self, job_id: str, timeout: float = 10.0) -> Job:  # noqa: ASYNC109
        async def until() -> Job:
            while True:
                found = await self.db.read(jobs.get, job_id=job_id)
                if found is not None and found.delivery_state not in ("none", "pending"):
                    return found
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(until(), timeout)

    async def user(self, who: FakeUser) -> User:
        found = await self.db.read(users.find_user, platform="discord", platform_user_id=str(who.id))
        assert found is not None, who.username
        return found

    async def ledger(self, job_id: str) -> list[tuple[str, int]]:
        return list(await self.db.read(ledger_of, job_id=job_id))


@pytest.fixture(autouse=True)
def quick_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake sends its one guild at once; waiting two seconds for more would only slow the tests.
    monkeypatch.setattr(bot.discord.frontend, "GUILD_READY_TIMEOUT_S", 0.05)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def fake_fal() -> AsyncIterator[FakeFal]:
    async with start_fal() as server:
        server.script = FalScript(queue_ticks=0, run_ticks=0)
        yield server


def stack_settings(discord_server: FakeDiscord, fal_server: FakeFal, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "discord": {
            "token": discord_server.token,
            "api_base": discord_server.api_base,
            "gateway_url": discord_server.gateway_url,
            "admin_role": str(discord_server.admin_role.id),
            "admin_guilds": [str(discord_server.guild.id)],
        },
        "fal": {"key": FAL_KEY, "base_url": fal_server.url},
        "route": ["fal-flux-pulid"],
        "metrics": {"address": ""},
        "admins": [],
        # Plain colour photos stand in for faces here: the face judge and the privacy notice are tested with
        # real photos in test_discord_faces.py.
        "judge": {"enabled": False},
        "privacy": {"consent": False},
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def stack(fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path) -> Stack:
    return Stack(fake_discord, fake_fal, stack_settings(fake_discord, fake_fal, tmp_path))


@pytest.fixture
def make_settings(fake_discord: FakeDiscord, fake_fal: FakeFal, tmp_path: Path) -> Callable[..., Settings]:
    return lambda **overrides: stack_settings(fake_discord, fake_fal, tmp_path, **overrides)
