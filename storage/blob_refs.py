"""Who uses which blob: rows hold references, and a blob may go only when its last reference is dropped."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from storage import tables as t

_r = t.blob_refs.c


def job_owner(job_id: str) -> str:
    return f"job:{job_id}"


def identity_owner(identity_id: int) -> str:
    return f"identity:{identity_id}"


def add(*, session: Connection, blob_key: str, owner: str) -> None:
    """Record that ``owner`` uses the blob (once: adding the same reference again changes nothing)."""
    session.execute(
        t.upsert_insert(session, t.blob_refs).values(blob_key=blob_key, owner=owner).on_conflict_do_nothing()
    )


def release(*, session: Connection, owner: str) -> list[str]:
    """Drop every reference held by ``owner``; returns the keys nothing references any more.

    The caller deletes those blobs after its transaction commits.
    """
    keys = list(session.execute(select(_r.blob_key).where(_r.owner == owner)).scalars())
    if not keys:
        return []
    session.execute(delete(t.blob_refs).where(_r.owner == owner))
    return unreferenced(session=session, keys=keys)


def unreferenced(*, session: Connection, keys: Sequence[str]) -> list[str]:
    """The given keys that no owner references now: checked again right before deleting the blobs,
    so a photo that a new job or identity took up in the meantime is kept."""
    if not keys:
        return []
    used = set(session.execute(select(_r.blob_key).where(_r.blob_key.in_(list(keys))).distinct()).scalars())
    return [key for key in keys if key not in used]
