"""Results over a server's upload limit: sent re-encoded smaller, or, when even that is too large, as a note."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

import tests.fakes.fal
from bot import messages
from bot.discord import uploads
from bot.service.replies import Reply, ReplyImage
from tests.fakes.discord import InteractionRecord, Upload
from tests.fakes.discord.models import UPLOAD_LIMITS

from .conftest import FOLLOWUP, Stack, face_png

pytestmark = pytest.mark.timeout(30)
LIMIT = 400_000


def noisy_jpeg(side: int = 1024) -> bytes:
    """A render that compresses badly: about 1.1 MB as a JPEG at quality 95."""
    noise = Image.merge("RGB", [Image.effect_noise((side, side), 64) for _ in range(3)])
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def large_renders(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """fal.ai's outputs are this large image; servers without boosts take files up to LIMIT bytes."""
    big = noisy_jpeg()
    assert len(big) > 2 * LIMIT
    monkeypatch.setattr(tests.fakes.fal, "tiny_image", lambda *args, **kwargs: big)
    monkeypatch.setitem(UPLOAD_LIMITS, 0, LIMIT)
    return big


async def imagine(stack: Stack) -> InteractionRecord:
    fake = stack.discord
    photo = Upload("me.png", face_png(), "image/png")
    return await fake.slash(fake.alice, fake.general, "imagine", {"prompt": "a knight"}, attachments={"photo": photo})


def image_of(data: bytes) -> tuple[str | None, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.width, image.height


async def test_a_result_over_the_servers_limit_is_posted_smaller(stack: Stack, large_renders: bytes) -> None:
    fake = stack.discord
    async with stack.serving():
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")
        assert (job.delivery_state, job.delivery_path) == ("delivered", "interaction")
        [result] = ix.followups
        [attachment] = result.attachments
        assert attachment.filename == "likeness-1.jpg" and attachment.size <= LIMIT
        assert image_of(attachment.data)[0] == "JPEG"
        assert result.custom_ids == [f"rr:dc:{ix.id}", f"va:dc:{ix.id}"]
        assert [r.status for r in fake.requests_to("POST", FOLLOWUP)] == [200]  # fitted before sending


async def test_a_413_from_discord_gets_the_result_sent_again_smaller(stack: Stack, large_renders: bytes) -> None:
    fake = stack.discord
    UPLOAD_LIMITS[0] = 10 * 1024 * 1024  # the limit the interaction states: the render fits it
    async with stack.serving():
        # Discord refuses the upload anyway, as it does for a file over the limit where it is posted.
        fake.fail("POST", FOLLOWUP, status=413, code=40005, message="Request entity too large")
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")
        assert (job.delivery_state, job.delivery_path) == ("delivered", "interaction")
        assert [r.status for r in fake.requests_to("POST", FOLLOWUP)] == [413, 200]
        [result] = ix.followups
        [attachment] = result.attachments
        assert attachment.size <= len(large_renders) // 2


async def test_a_result_too_large_even_made_smaller_becomes_a_note_without_links(
    stack: Stack, large_renders: bytes
) -> None:
    UPLOAD_LIMITS[0] = 2_000
    async with stack.serving():
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")
        assert (job.delivery_state, job.delivery_path) == ("delivered", "interaction")
        [note] = ix.followups
        assert note.attachments == [] and note.content.startswith(messages.DISCORD_RESULT_TOO_LARGE)
        assert "a knight" in note.content and "http" not in note.content
        assert note.custom_ids == [f"rr:dc:{ix.id}", f"va:dc:{ix.id}"]  # a reroll is still a click away


def test_shrinking_keeps_what_fits_and_flattens_transparency() -> None:
    small = ReplyImage(b"tiny", "image/png", 1, 1)
    reply = Reply("caption", images=(small,))
    out = io.BytesIO()
    Image.new("RGBA", (600, 400), (10, 20, 30, 0)).save(out, format="PNG")
    clear = ReplyImage(out.getvalue(), "image/png", 600, 400, filename="likeness-2.png")

    shrunk: Any = uploads.shrink(clear, len(clear.data) - 1)
    assert shrunk is not None and (shrunk.filename, shrunk.content_type) == ("likeness-2.jpg", "image/jpeg")
    with Image.open(io.BytesIO(shrunk.data)) as image:
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert uploads.shrink(clear, 100) is None
    assert uploads.shrink(ReplyImage(b"not an image", "image/png", 1, 1), 5) is None
    assert uploads.without_images(reply) == Reply(f"{messages.DISCORD_RESULT_TOO_LARGE}\n\ncaption")
    assert small.data == b"tiny" and reply.images == (small,)
