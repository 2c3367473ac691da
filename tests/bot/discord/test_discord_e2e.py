"""The Discord front end end to end: real discord.py against the fake Discord, fake fal.ai behind,
wired exactly as `likeness run` wires it."""

from __future__ import annotations

import pytest

from bot import messages
from tests.fakes.discord import CHANNEL_MESSAGE, InteractionRecord, SentMessage, Upload

from .conftest import Stack, face_png

pytestmark = pytest.mark.timeout(30)


async def imagine(stack: Stack, prompt: str = "an astronaut on the moon", **options: object) -> InteractionRecord:
    fake = stack.discord
    photo = Upload("me.png", face_png(), "image/png")
    return await fake.slash(
        fake.alice, fake.general, "imagine", {"prompt": prompt, **options}, attachments={"photo": photo}
    )


async def result_of(stack: Stack, interaction: InteractionRecord) -> SentMessage:
    """The public result the delivery posted through the interaction's token."""
    [message] = await stack.discord.wait_for_followups(interaction, 1, timeout=10)
    return message


async def test_imagine_with_a_photo_is_rendered_delivered_with_buttons_and_charged_once(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        ix = await imagine(stack)
        callback = await fake.wait_for_callback(ix)
        # Acknowledged at once, privately: the status message everyone else does not see.
        assert callback.type == CHANNEL_MESSAGE and ix.ephemeral
        assert callback.data["content"] == messages.DISCORD_WORKING

        result = await result_of(stack, ix)
        job_id = f"dc:{ix.id}"
        job = await stack.delivered(job_id)

        assert job.delivery_state == "delivered" and job.delivery_path == "interaction"
        assert not result.ephemeral and result.content.startswith("an astronaut on the moon")
        assert [a.filename for a in result.attachments] == ["likeness-1.jpg"]
        assert result.custom_ids == [f"rr:{job_id}", f"va:{job_id}"]
        assert job.reply_target["token"] == ix.token and job.reply_target["channel_id"] == str(fake.general.id)
        assert len(stack.fal.jobs) == 1

        user = await stack.user(fake.alice)
        assert (user.credits, user.reserved) == (stack.settings.credits.new_user - 1, 0)
        assert await stack.ledger(job_id) == [("commit", 1), ("reserve", 1)]
        # The private status message is removed once the result is out.
        await fake.wait_for(lambda: ix.original is not None and ix.original.deleted)
