"""Saved faces: one or more photos under a name, one of them the user's default."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from storage import blob_refs, embeddings
from storage import tables as t
from storage.models import Identity

_i = t.identities.c


def list_identities(*, session: Connection, user_id: int) -> list[Identity]:
    rows = session.execute(select(t.identities).where(_i.user_id == user_id).order_by(_i.name))
    return [Identity.model_validate(dict(row._mapping)) for row in rows]


def find(*, session: Connection, user_id: int, name: str | None) -> Identity | None:
    """The named identity, or the default one when ``name`` is None."""
    query = select(t.identities).where(_i.user_id == user_id)
    query = query.where(_i.name == name) if name is not None else query.where(_i.is_default.is_(True))
    row = session.execute(query).first()
    return None if row is None else Identity.model_validate(dict(row._mapping))


def count(*, session: Connection, user_id: int) -> int:
    return int(
        session.execute(select(func.count()).select_from(t.identities).where(_i.user_id == user_id)).scalar_one()
    )


def save(
    *,
    session: Connection,
    user_id: int,
    name: str,
    photo_keys: list[str],
    now: float,
    face_embeddings: Sequence[tuple[str, bytes]] = (),
) -> tuple[Identity, list[str]]:
    """Create or replace a named identity, with its photos' ``(judge, vector)`` embeddings; it becomes the
    default. Returns it and blobs now unused."""
    existing = find(session=session, user_id=user_id, name=name)
    freed: list[str] = []
    if existing is not None and existing.id is not None:
        owner = blob_refs.identity_owner(existing.id)
        freed = blob_refs.release(session=session, owner=owner)
        embeddings.remove(session=session, owner=owner)
        session.execute(delete(t.identities).where(_i.id == existing.id))
    session.execute(update(t.identities).where(_i.user_id == user_id).values(is_default=False))
    new_id = session.execute(
        t.identities.insert()
        .values(user_id=user_id, name=name, is_default=True, photo_keys=photo_keys, created_at=now)
        .returning(_i.id)
    ).scalar_one()
    for key in photo_keys:
        blob_refs.add(session=session, blob_key=key, owner=blob_refs.identity_owner(new_id))
    embeddings.store(session=session, owner=blob_refs.identity_owner(new_id), embeddings=face_embeddings, now=now)
    freed = [key for key in freed if key not in photo_keys]
    identity = find(session=session, user_id=user_id, name=name)
    assert identity is not None
    return identity, freed


def use(*, session: Connection, user_id: int, name: str) -> bool:
    """Make the named identity the default; False if there is none by that name."""
    if find(session=session, user_id=user_id, name=name) is None:
        return False
    session.execute(update(t.identities).where(_i.user_id == user_id).values(is_default=_i.name == name))
    return True


def remove(*, session: Connection, user_id: int, name: str | None = None) -> tuple[int, list[str]]:
    """Delete one identity (or all when ``name`` is None) with its embeddings; returns how many and the
    blobs now unused."""
    query = select(_i.id).where(_i.user_id == user_id)
    if name is not None:
        query = query.where(_i.name == name)
    ids = list(session.execute(query).scalars())
    freed: list[str] = []
    for identity_id in ids:
        freed += blob_refs.release(session=session, owner=blob_refs.identity_owner(identity_id))
        embeddings.remove(session=session, owner=blob_refs.identity_owner(identity_id))
    if ids:
        session.execute(delete(t.identities).where(_i.id.in_(ids)))
    return len(ids), freed
