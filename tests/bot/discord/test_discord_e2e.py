"""The Discord front end end to end: real discord.py against the fake Discord, fake fal.ai behind,
wired exactly as `likeness run` wires it."""

from __future__ import annotations

import pytest

import bot.discord.frontend
from bot import messages
from bot.intake import MAX_BYTES
from storage import jobs, quota
from tests.fakes.discord import CHANNEL_MESSAGE, EPHEMERAL, InteractionRecord, SentMessage, Upload

from .conftest import CHANNEL_MESSAGES, FOLLOWUP, Stack, audit_of, face_png

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


async def test_a_reroll_clicked_after_a_restart_renders_again(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        ix = await imagine(stack)
        result = await result_of(stack, ix)
        await stack.delivered(f"dc:{ix.id}")

    # A new process on the same data directory: it never saw the message the button is on.
    async with stack.serving():
        click = await fake.click(fake.alice, result, f"rr:dc:{ix.id}")
        rerolled = await result_of(stack, click)
        job = await stack.delivered(f"dc:{click.id}")

        assert (job.kind, job.parent_id, job.delivery_path) == ("rr", f"dc:{ix.id}", "interaction")
        assert rerolled.custom_ids == [f"rr:dc:{click.id}", f"va:dc:{click.id}"]
        assert click.ephemeral and click.callback_type == CHANNEL_MESSAGE
        user = await stack.user(fake.alice)
        assert user.credits == stack.settings.credits.new_user - 2

        # Someone else's click on the same button is refused, privately and free of charge.
        other = fake.add_user("bob")
        refused = await fake.click(other, result, f"va:dc:{ix.id}")
        await fake.wait_for(lambda: refused.original is not None and refused.original.content == messages.NOT_YOUR_JOB)
        assert refused.ephemeral
        assert await stack.db.read(jobs.get, job_id=f"dc:{refused.id}") is None


async def test_admin_commands_are_checked_by_the_service_whatever_discord_lets_through(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        # The fake ignores default_member_permissions, as a server override would: the service refuses.
        refused = await fake.slash(fake.alice, fake.general, "admin grant", {"user": str(fake.alice.id), "credits": 50})
        await fake.wait_for(lambda: refused.original is not None and refused.original.content == messages.NOT_ADMIN)
        assert refused.ephemeral

        # A member holding the configured admin role may.
        granted = await fake.slash(
            fake.admin, fake.general, "admin grant", {"user": f"<@{fake.alice.id}>", "credits": 50}
        )
        await fake.wait_for(lambda: granted.original is not None and "Granted 50" in granted.original.content)
        assert granted.ephemeral
        user = await stack.user(fake.alice)
        assert user.credits == stack.settings.credits.new_user + 50


async def test_admin_channels_limit_where_the_bot_answers(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        added = await fake.slash(fake.admin, fake.general, "admin channels add", {"channel": fake.nsfw})
        await fake.wait_for(lambda: added.original is not None and f"<#{fake.nsfw.id}>" in added.original.content)

        ix = await imagine(stack)
        await fake.wait_for(lambda: ix.original is not None and ix.original.content == messages.NOT_THIS_CHANNEL)
        assert ix.ephemeral and not stack.fal.jobs

        cleared = await fake.slash(fake.admin, fake.general, "admin channels clear")
        await fake.wait_for(
            lambda: cleared.original is not None and cleared.original.content == messages.DISCORD_ALL_CHANNELS
        )
        audit = await stack.db.read(audit_of, target=f"discord:guild:{fake.guild.id}")
        assert audit == [
            ("discord:" + str(fake.admin.id), "channels-add"),
            ("discord:" + str(fake.admin.id), "channels-clear"),
        ]


async def test_an_expired_token_falls_back_to_a_channel_post(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        # Discord answers the result's follow-up as it does once the 15 minutes are over.
        fake.fail("POST", FOLLOWUP, status=401, code=50027, message="Invalid Webhook Token")
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")

        assert job.delivery_path == "channel"
        [posted] = [m for m in fake.channel_messages(fake.general) if m.interaction is None]
        assert posted.content.startswith(f"<@{fake.alice.id}> an astronaut")
        assert posted.custom_ids == [f"rr:dc:{ix.id}", f"va:dc:{ix.id}"] and len(posted.attachments) == 1


async def test_a_token_past_its_time_is_not_tried(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = stack.discord
    monkeypatch.setattr(bot.discord.frontend, "TOKEN_MARGIN_S", 15 * 60 + 1)
    async with stack.serving():
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")
        assert job.delivery_path == "channel"
        assert fake.requests_to("POST", FOLLOWUP) == []


async def test_a_channel_without_permission_falls_back_to_a_dm_then_gives_up(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        fake.fail("POST", FOLLOWUP, status=401, code=50027, message="Invalid Webhook Token", times=2)
        fake.deny_channel(fake.general)
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")

        assert job.delivery_path == "dm"
        [dm] = fake.dm_messages(fake.alice)
        assert dm.custom_ids == [f"rr:dc:{ix.id}", f"va:dc:{ix.id}"] and len(dm.attachments) == 1
        assert [r.status for r in fake.requests_to("POST", CHANNEL_MESSAGES)][:1] == [403]

        # Nowhere left: the user closed their DMs too. The job is marked, not retried for ever.
        fake.close_dms(fake.alice)
        again = await imagine(stack, "a knight")
        job = await stack.delivered(f"dc:{again.id}")
        assert (job.delivery_state, job.delivery_path) == ("undeliverable", None)


async def test_a_rate_limited_follow_up_is_retried(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        fake.rate_limit("POST", FOLLOWUP, times=1, retry_after=0.05)
        ix = await imagine(stack)
        job = await stack.delivered(f"dc:{ix.id}")

        assert job.delivery_path == "interaction"
        assert [r.status for r in fake.requests_to("POST", FOLLOWUP)] == [429, 200]
        assert len(ix.followups) == 1


@pytest.mark.parametrize(
    ("upload", "reply"),
    [
        (Upload("huge.png", b"\x89PNG" + bytes(MAX_BYTES), "image/png"), messages.PHOTO_TOO_LARGE.format(mb=20)),
        (Upload("notes.txt", b"just text", "text/plain"), messages.PHOTO_NOT_IMAGE),
        (Upload("fake.png", b"not really a png", "image/png"), messages.PHOTO_NOT_IMAGE),
    ],
    ids=["oversized", "not-an-image-type", "not-an-image-inside"],
)
async def test_a_bad_attachment_gets_a_private_reply_and_costs_nothing(
    stack: Stack, upload: Upload, reply: str
) -> None:
    fake = stack.discord
    async with stack.serving():
        ix = await fake.slash(fake.alice, fake.general, "imagine", {"prompt": "me"}, attachments={"photo": upload})
        callback = await fake.wait_for_callback(ix)
        await fake.wait_for(lambda: ix.original is not None and ix.original.content == reply)
        assert int(callback.data.get("flags") or 0) & EPHEMERAL
        assert await stack.db.read(jobs.get, job_id=f"dc:{ix.id}") is None
        assert not stack.fal.jobs
        user = await stack.db.read(quota.find_user, platform="discord", platform_user_id=str(fake.alice.id))
        assert user is None or (user.credits, user.reserved) == (stack.settings.credits.new_user, 0)
