"""Face checks, the likeness score and its free re-render, the privacy notice and the safety policy, end to end
through discord.py, the fake Discord and the fake fal.ai, on real photos."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from bot import messages
from bot.settings import Settings
from tests.engine.judge import photos
from tests.fakes.discord import FakeChannel, FakeUser, InteractionRecord, SentMessage, Upload
from tests.fakes.fal import FalOutcome, FalScript

from .conftest import Stack, face_png

pytestmark = pytest.mark.timeout(60)
JUDGED = {"judge": {"enabled": True}, "privacy": {"consent": True}}


def jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95)
    return out.getvalue()


def tom() -> bytes:
    return jpeg(photos.scaled(photos.tom(), 3))


def tom_rendered() -> bytes:
    return jpeg(photos.rotated(photos.scaled(photos.flipped(photos.tom()), 4), 6))


async def imagine(
    stack: Stack, photo: bytes, *, who: FakeUser | None = None, channel: FakeChannel | None = None
) -> InteractionRecord:
    fake = stack.discord
    return await fake.slash(
        who or fake.alice,
        channel or fake.general,
        "imagine",
        {"prompt": "a lighthouse keeper"},
        attachments={"photo": Upload("me.jpg", photo, "image/jpeg")},
    )


async def private_answer(stack: Stack, ix: InteractionRecord, starts: str) -> SentMessage:
    return await stack.discord.wait_for(
        lambda: ix.original if ix.original is not None and ix.original.content.startswith(starts) else None,
        timeout=15,
    )


async def result_of(stack: Stack, ix: InteractionRecord) -> SentMessage:
    [message] = await stack.discord.wait_for_followups(ix, 1, timeout=30)
    return message


async def agree(stack: Stack) -> None:
    ix = await imagine(stack, tom())
    notice = await private_answer(stack, ix, "Before I use a face photo")
    assert ix.ephemeral and notice.custom_ids == ["pv:yes"]
    await stack.discord.click(stack.discord.alice, notice, "pv:yes")
    await private_answer(stack, ix, "Thank you: your agreement is recorded")
    assert stack.fal.jobs == {}  # nothing was rendered for the photo sent before agreeing


async def test_the_privacy_notice_then_a_free_re_render_of_someone_else_s_face(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    async with stack.serving(make_settings(**JUDGED)):
        privacy = await fake.slash(fake.alice, fake.general, "privacy")
        shown = await private_answer(stack, privacy, "Before I use a face photo")
        assert shown.custom_ids == ["pv:yes"]
        await agree(stack)
        user = await stack.user(fake.alice)
        assert user.privacy_accepted_at is not None and (user.credits, user.reserved) == (10, 0)

        stack.fal.next_scripts = [
            FalScript(queue_ticks=0, run_ticks=0, output=jpeg(photos.astronaut())),
            FalScript(queue_ticks=0, run_ticks=0, output=tom_rendered()),
        ]
        ix = await imagine(stack, tom())
        result = await result_of(stack, ix)
        job = await stack.delivered(f"dc:{ix.id}")
        assert len(stack.fal.jobs) == 2  # one free re-render
        assert result.content.startswith("a lighthouse keeper") and "· likeness " in result.content
        assert int(result.content.rsplit("likeness ", 1)[1].rstrip("%")) > 70
        assert await stack.ledger(job.id) == [("commit", 1), ("reserve", 1)]
        assert job.spend_usd > 0

        again = await fake.slash(fake.alice, fake.general, "privacy")
        agreed = await private_answer(stack, again, "Before I use a face photo")
        assert "You agreed on" in agreed.content and agreed.custom_ids == []


async def test_a_group_photo_is_refused_privately_and_costs_nothing(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    async with stack.serving(make_settings(**JUDGED)):
        await agree(stack)
        ix = await imagine(stack, jpeg(photos.group()))
        await private_answer(stack, ix, "I see 5 faces of similar size in that photo")
        dark = await imagine(stack, jpeg(photos.darkened(photos.scaled(photos.tom(), 3), 0.2)))
        await private_answer(stack, dark, "That photo is too dark to read the face")
        assert stack.fal.jobs == {}
        user = await stack.user(stack.discord.alice)
        assert (user.credits, user.reserved) == (10, 0)


async def test_flagged_results_are_blocked_and_refunded_by_default_but_allowed_in_nsfw_channels(stack: Stack) -> None:
    fake = stack.discord
    stack.fal.script = FalScript(queue_ticks=0, run_ticks=0, outcome=FalOutcome.NSFW)
    async with stack.serving():
        public = await imagine(stack, face_png())
        blocked = await result_of(stack, public)
        assert blocked.content.startswith(messages.FAILURES["unsafe_output"]) and blocked.attachments == []
        job = await stack.job(f"dc:{public.id}")
        assert (job.state, job.error) == ("failed", "unsafe_output")
        assert await stack.ledger(job.id) == [("refund", 1), ("reserve", 1)]

        after_dark = await imagine(stack, face_png(), channel=fake.nsfw)
        plain = await result_of(stack, after_dark)
        assert [a.filename for a in plain.attachments] == ["likeness-1.jpg"]

        # A server's managers choose their own policy: spoilered results there.
        changed = await fake.slash(fake.admin, fake.general, "admin safety", {"policy": "spoiler"})
        await private_answer(stack, changed, "Safety policy in this server: spoiler")
        spoiler = await imagine(stack, face_png())
        spoilered = await result_of(stack, spoiler)
        assert [a.filename for a in spoilered.attachments] == ["SPOILER_likeness-1.jpg"]
