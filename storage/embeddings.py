"""Face embeddings (biometric data): kept per owner, an identity or a job, and deleted with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from storage import tables as t

_e = t.face_embeddings.c


@dataclass(frozen=True)
class StoredEmbedding:
    position: int
    judge: str
    vector: bytes = field(repr=False)


def store(*, session: Connection, owner: str, embeddings: Sequence[tuple[str, bytes]], now: float) -> None:
    """Replace the owner's embeddings with ``(judge, vector)`` pairs, in their photos' order."""
    remove(session=session, owner=owner)
    if embeddings:
        session.execute(
            t.face_embeddings.insert(),
            [
                {"owner": owner, "position": position, "judge": judge, "vector": vector, "created_at": now}
                for position, (judge, vector) in enumerate(embeddings)
            ],
        )


def of_owner(*, session: Connection, owner: str) -> list[StoredEmbedding]:
    rows = session.execute(
        select(_e.position, _e.judge, _e.vector).where(_e.owner == owner).order_by(_e.position, _e.id)
    )
    return [StoredEmbedding(int(position), str(judge), bytes(vector)) for position, judge, vector in rows]


def copy(*, session: Connection, source: str, owner: str, now: float) -> int:
    """Give ``owner`` the embeddings ``source`` has (a job made from a saved face or an earlier job)."""
    found = of_owner(session=session, owner=source)
    store(session=session, owner=owner, embeddings=[(e.judge, e.vector) for e in found], now=now)
    return len(found)


def remove(*, session: Connection, owner: str) -> int:
    """Delete the owner's embeddings; returns how many there were."""
    return int(session.execute(delete(t.face_embeddings).where(_e.owner == owner)).rowcount or 0)


def remove_owners(*, session: Connection, owners: Sequence[str]) -> int:
    if not owners:
        return 0
    return int(session.execute(delete(t.face_embeddings).where(_e.owner.in_(list(owners)))).rowcount or 0)


def count(*, session: Connection, owners: Sequence[str]) -> int:
    if not owners:
        return 0
    query = select(func.count()).select_from(t.face_embeddings).where(_e.owner.in_(list(owners)))
    return int(session.execute(query).scalar_one())
