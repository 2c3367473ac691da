"""The Discord front end end to end: real discord.py against the fake Discord, fake fal.ai behind,
wired exactly as `likeness run` wires it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

import bot.discord.frontend
from bot import messages
from bot.discord.commands import COMMANDS
from bot.discord.frontend import DiscordStartError
from bot.discord.sync import sync_commands
from bot.intake import MAX_BYTES
from bot.service.account import Account
from bot.service.actors import Actor
from bot.service.replies import Reply
from bot.settings import Settings
from engine.request import size_for_aspect
from storage import jobs, users
from tests.fakes.discord import CHANNEL_MESSAGE, EPHEMERAL, InteractionRecord, SentMessage, Upload
from tests.fakes.fal import FalOutcome, FalScript
from tests.fakes.telegram import FakeTelegram

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

        # A pause covers this server only, and says why.
        paused = await fake.slash(fake.admin, fake.general, "admin pause", {"reason": "maintenance"})
        await fake.wait_for(
            lambda: paused.original is not None and paused.original.content == messages.paused("maintenance")
        )
        ix = await imagine(stack)
        await fake.wait_for(
            lambda: ix.original is not None and ix.original.content == messages.paused_for_users("maintenance")
        )
        resumed = await fake.slash(fake.admin, fake.general, "admin resume")
        await fake.wait_for(lambda: resumed.original is not None and resumed.original.content == messages.RESUMED)
        again = await imagine(stack)
        assert (await stack.delivered(f"dc:{again.id}")).delivery_path == "interaction"


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
        user = await stack.db.read(users.find_user, platform="discord", platform_user_id=str(fake.alice.id))
        assert user is None or (user.credits, user.reserved) == (stack.settings.credits.new_user, 0)


async def test_results_flagged_nsfw_are_spoilered_outside_nsfw_channels(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    stack.fal.script = FalScript(queue_ticks=0, run_ticks=0, outcome=FalOutcome.NSFW)
    # The spoiler policy (the default blocks them: test_discord_faces.py).
    async with stack.serving(make_settings(safety={"policy": "spoiler"})):
        public = await imagine(stack)
        after_dark = await fake.slash(
            fake.alice,
            fake.nsfw,
            "imagine",
            {"prompt": "an astronaut"},
            attachments={"photo": Upload("me.png", face_png(), "image/png")},
        )
        spoilered, plain = await result_of(stack, public), await result_of(stack, after_dark)
        assert [a.filename for a in spoilered.attachments] == ["SPOILER_likeness-1.jpg"]
        assert [a.filename for a in plain.attachments] == ["likeness-1.jpg"]


async def test_cancel_button_on_the_status_message_cancels_and_refunds(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    stack.fal.script = FalScript(outcome=FalOutcome.STUCK)
    # A running job sees a cancel request at its next heartbeat.
    async with stack.serving(make_settings(queue={"heartbeat_s": 0.1, "lease_s": 5})):
        ix = await imagine(stack)
        job_id = f"dc:{ix.id}"
        status = await fake.wait_for(
            lambda: ix.original if ix.original and f"cx:{job_id}" in ix.original.custom_ids else None
        )
        # The provider's queue position shows up on the status message while the job waits there.
        await fake.wait_for(lambda: any("Waiting at fal-flux-pulid" in str(e.get("content")) for e in status.edits))
        click = await fake.click(fake.alice, status, f"cx:{job_id}")
        await fake.wait_for(lambda: click.callback)
        job = await stack.delivered(job_id)

        assert job.state == "cancelled"
        assert status.edits[-1]["content"] in (
            messages.cancel_outcome("cancelled"),
            messages.cancel_outcome("requested"),
        )
        [notice] = ix.followups
        assert notice.content == messages.CANCELLED_REFUNDED
        user = await stack.user(fake.alice)
        assert (user.credits, user.reserved) == (stack.settings.credits.new_user, 0)


async def test_saved_faces_autocomplete_and_render_without_a_photo(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        saved = await fake.slash(
            fake.alice,
            fake.general,
            "face save",
            {"name": "Me"},
            attachments={
                "photo": Upload("a.png", face_png(), "image/png"),
                "photo2": Upload("b.png", face_png(300), "image/png"),
            },
        )
        await fake.wait_for(
            lambda: saved.original is not None and saved.original.content == messages.face_saved("me", 2)
        )

        typed = await fake.autocomplete(
            fake.alice, fake.general, "imagine", {"prompt": "x", "face": "m"}, focused="face"
        )
        choices = await fake.wait_for(lambda: typed.choices)
        assert choices == [{"name": "me", "value": "me"}]

        listed = await fake.slash(fake.alice, fake.general, "face list")
        await fake.wait_for(
            lambda: listed.original is not None and "me (2 photos) — default" in listed.original.content
        )

        ix = await fake.slash(fake.alice, fake.general, "imagine", {"prompt": "a pirate", "aspect": "3:4", "seed": 7})
        result = await result_of(stack, ix)
        job = await stack.delivered(f"dc:{ix.id}")
        assert result.attachments and job.params["seed"] == 7
        assert (job.params["width"], job.params["height"]) == size_for_aspect("3:4")


async def test_forget_asks_first_and_history_is_private(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        ix = await imagine(stack)
        await stack.delivered(f"dc:{ix.id}")

        history = await fake.slash(fake.alice, fake.general, "history")
        await fake.wait_for(
            lambda: history.original is not None and "an astronaut on the moon" in history.original.content
        )
        assert history.ephemeral

        forget = await fake.slash(fake.alice, fake.general, "forget")
        await fake.wait_for_callback(forget)
        assert forget.ephemeral and forget.original is not None
        assert forget.original.custom_ids == ["fg:yes", "fg:no"]
        click = await fake.click(fake.alice, forget.original, "fg:yes")
        await fake.wait_for(
            lambda: forget.original is not None and forget.original.content.startswith("Done. Deleted for good")
        )
        assert forget.original.components == [] and click.callback_type == 6
        assert await stack.db.read(jobs.get, job_id=f"dc:{ix.id}") is None


async def test_an_unexpected_error_is_logged_and_the_user_gets_a_short_private_apology(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = stack.discord

    async def broken(self: Account, actor: Actor) -> Reply:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(Account, "quota", broken)
    async with stack.serving():
        ix = await fake.slash(fake.alice, fake.general, "quota")
        await fake.wait_for(lambda: ix.original is not None and ix.original.content == messages.INTERNAL_ERROR)
        assert ix.ephemeral
        assert any(str(ix.id) in r.getMessage() and r.exc_info for r in caplog.records if r.levelname == "ERROR")


async def test_sync_registers_the_commands_globally_or_for_one_guild(stack: Stack) -> None:
    fake = stack.discord
    assert await sync_commands(stack.settings.discord, None) == len(COMMANDS)
    names = {c["name"]: c for c in fake.global_commands}
    assert set(names) == {c.name for c in COMMANDS} >= {"imagine", "face", "history", "language", "styles", "admin"}
    assert names["imagine"]["name_localizations"]["de"] == "bild"  # the users' commands in their languages
    assert "name_localizations" not in names["admin"] or not names["admin"]["name_localizations"]
    assert int(names["admin"]["default_member_permissions"]) == 32  # Manage Server
    assert names["admin"]["contexts"] == [0]  # guilds only
    steps = next(o for o in names["imagine"]["options"] if o["name"] == "steps")
    assert (steps["min_value"], steps["max_value"]) == (1, 100)  # the union of every backend's range

    assert await sync_commands(stack.settings.discord, fake.guild.id) == len(COMMANDS)
    assert len(fake.guild_commands[fake.guild.id]) == len(COMMANDS)
    assert fake.connections == []  # REST only

    with pytest.raises(DiscordStartError, match="LIKENESS_DISCORD__TOKEN"):
        await sync_commands(stack.settings.discord.model_copy(update={"token": SecretStr("wrong")}), None)


async def test_telegram_and_discord_run_in_one_process_and_both_deliver(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    async with FakeTelegram() as telegram:
        settings = make_settings(
            telegram={"token": telegram.token, "base_url": telegram.base_url, "base_file_url": telegram.base_file_url}
        )
        async with stack.serving(settings):
            ann = telegram.user("Ann")
            chat = telegram.private_chat(ann)
            telegram.send_photo(ann, chat, face_png(), caption="an astronaut on the moon")
            ix = await imagine(stack)

            photo = await telegram.wait_for(
                lambda: next((m for m in telegram.messages(chat) if m.method == "sendPhoto"), None), timeout=10
            )
            result = await result_of(stack, ix)
            assert photo.photo and result.attachments
            tg_jobs = [m for m in telegram.messages(chat) if m.method == "sendPhoto"]
            assert len(tg_jobs) == 1
        assert fake.server_errors == []


async def test_a_rejected_token_stops_the_start_with_one_clear_error(
    stack: Stack, make_settings: Callable[..., Settings]
) -> None:
    fake = stack.discord
    settings = make_settings(discord={"token": "wrong", "api_base": fake.api_base, "gateway_url": fake.gateway_url})
    with pytest.raises(DiscordStartError, match="LIKENESS_DISCORD__TOKEN"):
        async with stack.serving(settings):
            pass
    assert fake.connections == []


async def test_history_pages_with_buttons(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        for n in range(6):
            ix = await imagine(stack, f"portrait number {n}")
            await stack.delivered(f"dc:{ix.id}")
        history = await fake.slash(fake.alice, fake.general, "history")
        page = await fake.wait_for(
            lambda: history.original if history.original and history.original.custom_ids else None
        )
        assert "page 1 of 2" in page.content and page.custom_ids == ["menu:op", "hi:1"]

        await fake.click(fake.alice, page, "hi:1")
        await fake.wait_for(lambda: "page 2 of 2" in page.content)
        assert "portrait number 0" in page.content and page.custom_ids == ["menu:op", "hi:0"]


async def test_the_small_commands_answer_privately(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        expected = {
            "help": messages.HELP,
            "cancel": messages.NOTHING_TO_CANCEL,
            "face delete-all": messages.faces_deleted(0),
        }
        for name, text in expected.items():
            ix = await fake.slash(fake.alice, fake.general, name)
            await fake.wait_for(lambda ix=ix, text=text: ix.original is not None and ix.original.content == text)
            assert ix.ephemeral

        quota_ix = await fake.slash(fake.alice, fake.general, "quota")
        await fake.wait_for(lambda: quota_ix.original is not None and "Credits: 10" in quota_ix.original.content)
        use = await fake.slash(fake.alice, fake.general, "face use", {"name": "nobody"})
        await fake.wait_for(
            lambda: use.original is not None and use.original.content == messages.NO_SUCH_FACE.format(name="nobody")
        )
