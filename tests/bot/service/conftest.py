"""The service over a real SQLite store, a real dispatcher and a scripted backend; actors and photos for the tests."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import Connection

from bot.service.actors import Actor
from bot.service.use_cases import LikenessService
from bot.settings import Settings
from engine.dispatch import Dispatcher
from engine.events import JobProgress, ProgressHub
from engine.routing import Router
from storage import jobs, users
from storage import tables as t
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.models import Job, User
from tests.bot.service.scripted import NAME, ScriptedBackend

ADMIN = Actor("telegram", "1", "Root", chat_id="1")
ANN = Actor("telegram", "101", "Ann", chat_id="101")
BOB = Actor("telegram", "202", "Bob", chat_id="202")
GUILD = "900"
GENERAL, ELSEWHERE = "901", "902"
ADMIN_ROLE = "903"
MEMBER = Actor("discord", "301", "Cy", chat_id=GENERAL, guild_id=GUILD)
MODERATOR = Actor("discord", "302", "Di", chat_id=GENERAL, guild_id=GUILD, roles=(ADMIN_ROLE,))
WELCOME = 10


@dataclass(frozen=True)
class ChatTarget:
    """A reply target as any front end would store one: the service only keeps its JSON."""

    chat: str
    status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"platform": "test", "chat": self.chat, "status": self.status}


def face_photo(size: tuple[int, int] = (400, 480), color: str = "peachpuff") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def ledger_of(*, session: Connection, job_id: str) -> list[tuple[str, int]]:
    rows = session.execute(select(t.ledger.c.kind, t.ledger.c.amount).where(t.ledger.c.job_id == job_id))
    return sorted((str(kind), int(amount)) for kind, amount in rows)


def audit_of(*, session: Connection, target: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = session.execute(
        select(t.audit_log.c.actor, t.audit_log.c.action, t.audit_log.c.detail)
        .where(t.audit_log.c.target == target)
        .order_by(t.audit_log.c.id)
    )
    return [(str(actor), str(action), dict(detail)) for actor, action, detail in rows]


@dataclass
class World:
    db: Database
    blobs: LocalBlobStore
    backend: ScriptedBackend
    router: Router
    settings: Settings
    service: LikenessService
    dispatcher: Dispatcher
    events: list[JobProgress] = field(default_factory=list)
    notified: list[bool] = field(default_factory=list)

    async def run_jobs(self) -> None:
        """Claim and render every queued job to its end."""
        await self.dispatcher.drain()

    async def job(self, job_id: str) -> Job:
        found = await self.db.read(jobs.get, job_id=job_id)
        assert found is not None, job_id
        return found

    async def user(self, actor: Actor) -> User:
        found = await self.db.read(users.find_user, platform=actor.platform, platform_user_id=actor.user_id)
        assert found is not None, actor.key
        return found

    async def ledger(self, job_id: str) -> list[tuple[str, int]]:
        return list(await self.db.read(ledger_of, job_id=job_id))


def world_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "admins": [ADMIN.key],
        "discord": {"admin_role": ADMIN_ROLE, "admin_guilds": [GUILD]},
        "credits": {"new_user": WELCOME, "per_image": 1, "daily_jobs": 20},
        "queue": {"heartbeat_s": 0.05, "lease_s": 5},
        "max_identities": 2,
        # The face judge and the privacy notice have tests of their own (test_face_checks.py); here plain
        # colour photos stand in for faces.
        "privacy": {"consent": False},
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = world_settings(tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    await db.upgrade()
    blobs = LocalBlobStore(tmp_path / "blobs")
    backend = ScriptedBackend()
    router = Router({NAME: backend}, [NAME], Dispatcher.breakers_for([NAME], settings.dispatch))
    hub = ProgressHub()
    dispatcher = Dispatcher(
        db, blobs, router, settings=settings.dispatch, queue=settings.queue, hub=hub, worker_id="service-tests"
    )
    notified: list[bool] = []
    service = LikenessService(
        db=db, blobs=blobs, router=router, settings=settings, notify=lambda: notified.append(True)
    )
    found = World(db, blobs, backend, router, settings, service, dispatcher, notified=notified)
    hub.subscribe(found.events.append)
    try:
        yield found
    finally:
        await dispatcher.abandon()
        await db.dispose()
