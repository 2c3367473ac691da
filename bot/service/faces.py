"""Saved faces (identities): save one from photos, list them, choose the default, delete them."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import messages
from bot.errors import UserError
from bot.intake import MAX_PHOTOS, normalized
from bot.service.actors import Actor
from bot.service.face_check import FaceCheck
from bot.service.replies import Reply
from bot.service.users import Users
from storage import identities
from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import QuotaRefused, RefusalReason

MAX_NAME = 32


class Faces:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        users: Users,
        max_identities: int,
        face_check: FaceCheck,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.blobs, self.users = db, blobs, users
        self.max_identities, self.clock = max_identities, clock
        self.face_check = face_check

    async def save(self, actor: Actor, name: str, photos: tuple[bytes, ...]) -> Reply:
        """Save (or replace) a face under a name; it becomes the default. A banned user, a bad name or a
        full set of faces is refused before any photo is decoded; then the user must have agreed to the
        privacy notice, and the photos must show one usable face of one person."""
        name = name.strip().lower()
        if not name or len(name) > MAX_NAME or not all(c.isalnum() or c in "-_" for c in name):
            raise UserError(messages.BAD_FACE_NAME)
        if not photos:
            raise UserError(messages.FACE_NEEDS_PHOTOS)
        if len(photos) > MAX_PHOTOS:
            raise UserError(messages.TOO_MANY_PHOTOS.format(limit=MAX_PHOTOS))
        user = await self.users.of(actor)
        if user.banned:
            raise UserError(messages.refusal(QuotaRefused(RefusalReason.BANNED)))
        existing = await self.db.read(identities.find, user_id=user.id or 0, name=name)
        if existing is None and await self.db.read(identities.count, user_id=user.id or 0) >= self.max_identities:
            raise UserError(messages.face_cap(self.max_identities))
        self.face_check.require_consent(user)
        # Every photo is decoded and checked before any is stored: a bad one among them leaves no file behind.
        normalized_photos = [await normalized(photo) for photo in photos]
        found = await self.face_check.enroll(normalized_photos)
        keys = [await self.blobs.put(photo) for photo in normalized_photos]
        _identity, freed = await self.db.write(
            identities.save,
            user_id=user.id or 0,
            name=name,
            photo_keys=keys,
            now=self.clock(),
            face_embeddings=found,
        )
        await self._delete_blobs(freed)
        return Reply(messages.face_saved(name, len(keys)))

    async def show(self, actor: Actor) -> Reply:
        """The actor's saved faces, the default one marked."""
        user = await self.users.of(actor)
        found = await self.db.read(identities.list_identities, user_id=user.id or 0)
        return Reply(messages.face_list([(i.name, len(i.photo_keys), i.is_default) for i in found]))

    async def names(self, actor: Actor) -> list[str]:
        """The names of the actor's saved faces, for suggestions as they type."""
        user = await self.users.of(actor)
        return [i.name for i in await self.db.read(identities.list_identities, user_id=user.id or 0)]

    async def use(self, actor: Actor, name: str) -> Reply:
        user = await self.users.of(actor)
        if not await self.db.write(identities.use, user_id=user.id or 0, name=name.strip().lower()):
            raise UserError(messages.NO_SUCH_FACE.format(name=name))
        return Reply(messages.FACE_DEFAULT.format(name=name.strip().lower()))

    async def delete(self, actor: Actor, name: str | None) -> Reply:
        """Delete one face by name, or all of them (``None``); photos nothing else uses are deleted too."""
        user = await self.users.of(actor)
        removed, freed = await self.db.write(
            identities.remove, user_id=user.id or 0, name=None if name is None else name.strip().lower()
        )
        await self._delete_blobs(freed)
        if name is not None and not removed:
            raise UserError(messages.NO_SUCH_FACE.format(name=name))
        return Reply(messages.faces_deleted(removed))

    async def _delete_blobs(self, keys: list[str]) -> None:
        for key in keys:
            await self.blobs.delete(key)
