"""Discord end to end in the user's language, and history re-runs through the select menu."""

from __future__ import annotations

import pytest

from bot import messages
from tests.fakes.discord import Upload

from .conftest import Stack, face_png

pytestmark = pytest.mark.timeout(30)
GERMAN = "de"


async def test_a_german_user_reads_german_everywhere_until_choosing_another_language(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        photo = Upload("me.png", face_png(), "image/png")
        ix = await fake.slash(
            fake.alice, fake.general, "imagine", {"prompt": "ein Porträt"}, attachments={"photo": photo}, locale=GERMAN
        )
        callback = await fake.wait_for_callback(ix)
        assert callback.data["content"] == "Ich arbeite daran …"
        await stack.delivered(f"dc:{ix.id}")
        assert ix.original is not None
        # The status told in German before the result replaced it.
        shown = [ix.original.content, *(edit.get("content", "") for edit in ix.original.edits)]
        assert any(text.startswith(("In der Warteschlange", "Wird erzeugt")) for text in shown)

        quota = await fake.slash(fake.alice, fake.general, "quota", locale=GERMAN)
        await fake.wait_for(
            lambda: quota.original is not None and "Ein Bild kostet 1 Credit." in quota.original.content
        )
        assert "Credits: 9" in quota.original.content

        wrong = await fake.slash(
            fake.alice, fake.general, "imagine", {"prompt": "ein Porträt --tone noir"}, attachments={"photo": photo},
            locale=GERMAN,
        )  # fmt: skip
        await fake.wait_for(
            lambda: wrong.original is not None and wrong.original.content.startswith("Unbekannte Option --tone.")
        )

        chosen = await fake.slash(fake.alice, fake.general, "language", {"language": "en"}, locale=GERMAN)
        await fake.wait_for(
            lambda: chosen.original is not None and chosen.original.content == "From now on I answer you in English."
        )
        cancel = await fake.slash(fake.alice, fake.general, "cancel", locale=GERMAN)
        await fake.wait_for(
            lambda: cancel.original is not None and cancel.original.content == messages.NOTHING_TO_CANCEL
        )
        user = await stack.user(fake.alice)
        assert (user.language, user.locale) == ("en", GERMAN)

        back = await fake.slash(fake.alice, fake.general, "language", {"language": "auto"}, locale=GERMAN)
        await fake.wait_for(
            lambda: (
                back.original is not None
                and back.original.content == "Ich folge wieder der Sprache deiner App: im Moment Deutsch."
            )
        )


async def test_history_select_opens_an_entry_and_re_runs_it_charged(stack: Stack) -> None:
    fake = stack.discord
    async with stack.serving():
        photo = Upload("me.png", face_png(), "image/png")
        ix = await fake.slash(
            fake.alice, fake.general, "imagine", {"prompt": "a lighthouse"}, attachments={"photo": photo}
        )
        first = f"dc:{ix.id}"
        await stack.delivered(first)

        history = await fake.slash(fake.alice, fake.general, "history")
        page = await fake.wait_for(
            lambda: history.original if history.original and history.original.custom_ids else None
        )
        assert page.custom_ids == ["menu:op"]
        select = page.component("menu:op")
        assert select is not None and [o["value"] for o in select["options"]] == [first]
        assert select["options"][0]["label"] == "1. a lighthouse"

        opened = await fake.click(fake.alice, page, "menu:op", values=[first])
        [shown] = await fake.wait_for_followups(opened, 1)
        assert shown.ephemeral and shown.content.startswith("a lighthouse")
        assert [a.filename for a in shown.attachments] == ["likeness-1.jpg"]
        assert shown.custom_ids == [f"rr:{first}", f"va:{first}"]

        rerun = await fake.click(fake.alice, shown, f"rr:{first}")
        second = f"dc:{rerun.id}"
        job = await stack.delivered(second)
        assert job.parent_id == first and job.params["prompt"] == "a lighthouse"
        user = await stack.user(fake.alice)
        assert user.credits == 8  # charged like any job

        other = await fake.click(fake.admin, page, "menu:op", values=[first])
        await fake.wait_for(lambda: other.original is not None and other.original.content == messages.NOT_YOUR_JOB)
        assert other.ephemeral
