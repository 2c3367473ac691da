"""The audit log: who changed what, for the operator."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from storage import tables as t


def record(
    *,
    session: Connection,
    actor: str,
    action: str,
    target: str,
    now: float,
    detail: dict[str, Any] | None = None,
) -> None:
    session.execute(t.audit_log.insert().values(at=now, actor=actor, action=action, target=target, detail=detail or {}))
