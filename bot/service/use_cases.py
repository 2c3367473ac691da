"""Every use case a front end offers, wired once over one store: what the front ends hold and call."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.service.account import Account
from bot.service.admin import AdminService
from bot.service.face_check import FaceCheck
from bot.service.faces import Faces
from bot.service.imagine import Imagine
from bot.service.language import Languages
from bot.service.results import Results
from bot.service.shop import Shop
from bot.service.users import Users
from bot.settings import Settings
from engine.judge import FaceJudge
from engine.routing import Router
from storage.blobs import BlobStore
from storage.db import Database


class LikenessService:
    """``imagine`` (render, reroll, vary, cancel), ``faces``, ``account`` (help, history, quota, forget),
    ``admin``, ``results`` (what finished jobs deliver) and ``shop`` (selling credits)."""

    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        router: Router,
        settings: Settings,
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        judge: FaceJudge | None = None,
    ) -> None:
        self.users = Users(
            db, welcome_credits=settings.credits.new_user, default_language=settings.default_language, clock=clock
        )
        self.face_check = FaceCheck(
            db,
            judge=judge,
            settings=settings.judge,
            consent=settings.privacy.consent,
            retention_days=settings.retention.days,
            clock=clock,
        )
        self.imagine = Imagine(
            db=db,
            blobs=blobs,
            router=router,
            users=self.users,
            settings=settings,
            face_check=self.face_check,
            notify=notify,
            clock=clock,
        )
        self.faces = Faces(
            db=db,
            blobs=blobs,
            users=self.users,
            max_identities=settings.max_identities,
            face_check=self.face_check,
            clock=clock,
        )
        self.account = Account(
            db=db,
            blobs=blobs,
            users=self.users,
            credits=settings.credits,
            retention_days=settings.retention.days,
            clock=clock,
        )
        self.admin = AdminService(
            db,
            admins=settings.admins,
            admin_role=settings.discord.admin_role,
            admin_guilds=settings.discord.admin_guilds,
            welcome_credits=settings.credits.new_user,
            worker_ttl_s=3 * settings.queue.heartbeat_s,
            safety=settings.safety,
            clock=clock,
        )
        self.results = Results(db=db, blobs=blobs, default_language=settings.default_language, clock=clock)
        self.languages = Languages(self.users)
        self.styles = self.imagine.styles
        self.estimates = self.imagine.estimates
        self.account.results = self.results
        self.shop = Shop(
            db, settings=settings.shop, users=self.users, admin=self.admin, per_image=settings.credits.per_image,
            clock=clock,
        )  # fmt: skip
        self.account.shop = self.shop
