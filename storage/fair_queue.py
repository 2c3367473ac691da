"""Start-time fair queuing: the tags that order the queue, so one heavy user cannot starve the others."""

from __future__ import annotations

from sqlalchemy import Float, bindparam, case, func, literal, select

from storage import tables as t
from storage.states import TIER_WEIGHTS

_u, _j = t.users.c, t.jobs.c

# Jobs run in order of start tags. The virtual clock is the smallest start tag still queued (or, with an
# empty queue, the largest finish tag handed out), so a heavy user's backlog cannot push a newcomer
# behind it.
VIRTUAL_CLOCK = select(
    func.coalesce(
        select(func.min(_j.fair_key)).where(t.QUEUED).scalar_subquery(),
        select(func.max(_u.last_vfinish)).scalar_subquery(),
        0.0,
    )
).scalar_subquery()

# A job's tag step: its cost (the statement's ``cost`` parameter), shrunk by its owner's tier weight.
STEP = bindparam("cost", type_=Float) / case(
    *((_u.tier == tier.value, literal(weight)) for tier, weight in TIER_WEIGHTS.items()), else_=literal(1.0)
)

# The finish tag of a user's new job, written to ``users.last_vfinish``; its start tag is this minus STEP.
NEXT_FINISH = case((_u.last_vfinish > VIRTUAL_CLOCK, _u.last_vfinish), else_=VIRTUAL_CLOCK) + STEP
