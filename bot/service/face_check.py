"""Before a face photo is kept: the user's consent to the privacy notice, then the face judge's checks."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from bot import messages
from bot.errors import UserError
from bot.service.replies import Action, Button
from engine.judge import FaceJudge, JudgeSettings, Refusal, enroll
from storage import blob_refs, embeddings
from storage.db import Database
from storage.models import User

# (judge name, little-endian float32 vector) for each photo of an identity, in order.
FaceEmbeddings = tuple[tuple[str, bytes], ...]


class FaceCheck:
    """Consent first (nothing about a face is read before it), then one usable face of one person per photo
    set; the embeddings of an accepted set are what results are scored against.

    Without a judge (``LIKENESS_JUDGE__ENABLED=false``) photos are not checked and no embeddings are made;
    without ``LIKENESS_PRIVACY__CONSENT`` no agreement is asked for.
    """

    def __init__(
        self,
        db: Database,
        *,
        judge: FaceJudge | None,
        settings: JudgeSettings,
        consent: bool,
        retention_days: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.judge = judge if settings.enabled else None
        self.settings, self.consent, self.retention_days, self.clock = settings, consent, retention_days, clock

    def require_consent(self, user: User) -> None:
        """Refuse with the privacy notice and an "I agree" button until the user has agreed to it."""
        if self.consent and user.privacy_accepted_at is None:
            raise UserError(
                messages.privacy_needed(self.retention_days),
                (Button(messages.PRIVACY_AGREE, Action.PRIVACY, "yes"),),
            )

    async def enroll(self, photos: Sequence[bytes], *, min_face_px: int | None = None) -> FaceEmbeddings:
        """The embeddings of photos (decodable, normalised) that show one usable face of one person; a
        UserError saying what to fix when they do not. Empty when no judge runs."""
        judge = self.judge
        if judge is None or not photos:
            return ()
        found = await asyncio.to_thread(self._enroll, judge, list(photos), min_face_px)
        if isinstance(found, Refusal):
            raise UserError(messages.face_refused(found, len(photos)))
        return found

    def _enroll(self, judge: FaceJudge, photos: list[bytes], min_face_px: int | None) -> FaceEmbeddings | Refusal:
        images = [_rgb(photo) for photo in photos]
        enrollment = enroll(judge, images, self.settings, min_face_px=min_face_px)
        if isinstance(enrollment, Refusal):
            return enrollment
        return tuple((embedding.judge, embedding.to_bytes()) for embedding in enrollment.embeddings)


def keep_embeddings(session: Any, *, job_id: str, found: FaceEmbeddings, source: str | None, now: float) -> None:
    """Store a new job's face embeddings in its submit's transaction: those just made, or a copy of those of
    the saved face or earlier job (``source``, a blob-reference owner) it renders."""
    owner = blob_refs.job_owner(job_id)
    if found:
        embeddings.store(session=session, owner=owner, embeddings=found, now=now)
    elif source is not None:
        embeddings.copy(session=session, source=source, owner=owner, now=now)


def _rgb(photo: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(photo)) as image:
        return np.asarray(image.convert("RGB"))
