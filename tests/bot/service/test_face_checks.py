"""The privacy notice and the face checks through the use cases, on real photos: nothing is stored or charged
before the user agreed and the photos passed; accepted faces keep their embeddings, which go with the face,
the job and ``/forget``; each job carries the safety policy of where it was asked."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.imagine import ImagineInput
from bot.service.replies import Action
from bot.service.use_cases import LikenessService
from engine.judge import DlibJudge
from engine.safety import POLICY_PARAM
from storage import blob_refs, embeddings, identities, jobs
from tests.bot.service.conftest import ADMIN, ANN, BOB, GENERAL, MEMBER, ChatTarget, World, world_settings
from tests.engine.judge import photos


def jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95)
    return out.getvalue()


def tom() -> bytes:
    """Tom Hanks, enlarged past the 256 px every photo needs."""
    return jpeg(photos.scaled(photos.tom(), 3))


def asked(event: str, text: str = "a lighthouse keeper", *pictures: bytes, chat: str = "c1") -> ImagineInput:
    return ImagineInput(event, text, ChatTarget(chat), pictures)


@dataclass(frozen=True)
class AgeRestricted:
    def to_json(self) -> dict[str, Any]:
        return {"platform": "test", "nsfw": True}


@pytest.fixture(scope="module")
def judge() -> DlibJudge:
    return DlibJudge()


@pytest.fixture
async def checked(world: World, judge: DlibJudge, tmp_path: Path) -> AsyncIterator[LikenessService]:
    """The service of ``world`` with the face judge and the privacy notice, as the product runs it."""
    settings = world_settings(tmp_path, privacy={"consent": True})
    yield LikenessService(db=world.db, blobs=world.blobs, router=world.router, settings=settings, judge=judge)


def stored_files(world: World) -> list[Path]:
    return [path for path in world.blobs.root.rglob("*") if path.is_file()]


async def agree(service: LikenessService, actor: Actor) -> None:
    await service.account.accept_privacy(actor)


async def test_the_first_face_needs_the_privacy_notice_agreed_and_nothing_is_kept_before(
    world: World, checked: LikenessService
) -> None:
    with pytest.raises(UserError) as notice:
        await checked.imagine.submit(ANN, asked("e1", "a knight", tom()))
    assert notice.value.message == messages.privacy_needed(30)
    [button] = notice.value.buttons
    assert (button.label, button.action, button.argument) == (messages.PRIVACY_AGREE, Action.PRIVACY, "yes")
    for what in ("What I keep", "For how long: ", "30 days", "Who sees them", "/forget"):
        assert what in notice.value.message
    assert stored_files(world) == [] and await world.db.read(jobs.get, job_id="e1") is None
    with pytest.raises(UserError) as again:
        await checked.faces.save(ANN, "me", (tom(),))
    assert again.value.buttons == notice.value.buttons
    assert stored_files(world) == []
    user = await world.user(ANN)
    assert (user.credits, user.reserved, user.privacy_accepted_at) == (10, 0, None)

    shown = await checked.account.privacy(ANN)
    assert shown.text == messages.privacy_notice(30) and shown.buttons == notice.value.buttons
    accepted = await checked.account.accept_privacy(ANN)
    user = await world.user(ANN)
    assert user.privacy_accepted_at is not None and "your agreement is recorded" in accepted.text
    first = user.privacy_accepted_at
    await checked.account.accept_privacy(ANN)  # pressed twice: the first agreement counts
    assert (await world.user(ANN)).privacy_accepted_at == first
    shown = await checked.account.privacy(ANN)
    assert shown.buttons == () and "You agreed on" in shown.text

    submitted = await checked.imagine.submit(ANN, asked("e1", "a knight", tom()))
    assert submitted.job_id == "e1" and len(stored_files(world)) == 1


async def test_tom_hanks_is_accepted_and_his_embedding_kept_with_the_job(
    world: World, checked: LikenessService
) -> None:
    await agree(checked, ANN)
    await checked.imagine.submit(ANN, asked("e1", "a knight", tom()))
    [kept] = await world.db.read(embeddings.of_owner, owner=blob_refs.job_owner("e1"))
    assert kept.judge == "dlib-resnet-v1" and len(kept.vector) == 128 * 4
    assert (await world.job("e1")).params[POLICY_PARAM] == "block"


@pytest.mark.parametrize(
    ("photo", "said"),
    [
        (lambda: jpeg(photos.group()), "I see 5 faces of similar size in that photo"),
        (lambda: jpeg(photos.blurred(photos.scaled(photos.tom(), 3), 3)), "That photo is too blurred (sharpness 0.00"),
        (lambda: jpeg(photos.darkened(photos.scaled(photos.tom(), 3), 0.2)), "That photo is too dark to read the face"),
        (lambda: jpeg(np.full((400, 400, 3), 180, dtype=np.uint8)), "I couldn't find a face in that photo"),
    ],
)
async def test_a_bad_photo_is_refused_saying_what_to_fix_and_costs_nothing(
    world: World, checked: LikenessService, photo: Any, said: str
) -> None:
    await agree(checked, ANN)
    with pytest.raises(UserError) as refused:
        await checked.imagine.submit(ANN, asked("e1", "a knight", photo()))
    assert refused.value.message.startswith(said), refused.value.message
    assert refused.value.message.endswith("Nothing was charged or stored.")
    assert stored_files(world) == [] and await world.db.read(jobs.get, job_id="e1") is None
    user = await world.user(ANN)
    assert (user.credits, user.reserved) == (10, 0)


async def test_the_measured_values_are_in_the_message(world: World, checked: LikenessService) -> None:
    await agree(checked, ANN)
    with pytest.raises(UserError) as dark:
        await checked.faces.save(ANN, "me", (jpeg(photos.darkened(photos.scaled(photos.tom(), 3), 0.2)),))
    assert "brightness 22 of 255, at least 40 needed" in dark.value.message


async def test_a_saved_face_of_several_photos_names_the_odd_one_out_and_keeps_its_embeddings(
    world: World, checked: LikenessService
) -> None:
    await agree(checked, ANN)
    tom_too = jpeg(photos.scaled(photos.flipped(photos.tom()), 3))
    with pytest.raises(UserError) as odd:
        await checked.faces.save(ANN, "me", (tom(), jpeg(photos.astronaut()), tom_too))
    assert odd.value.message.startswith("Photo 2 looks like someone else (likeness ")
    assert stored_files(world) == []

    await checked.faces.save(ANN, "me", (tom(), tom_too))
    user = await world.user(ANN)
    me = await world.db.read(identities.find, user_id=user.id or 0, name="me")
    assert me is not None
    kept = await world.db.read(embeddings.of_owner, owner=blob_refs.identity_owner(me.id or 0))
    assert [e.position for e in kept] == [0, 1]

    # A render of the saved face carries its embeddings, and so does a reroll of that render.
    await checked.imagine.submit(ANN, asked("e1", "a knight"))
    assert len(await world.db.read(embeddings.of_owner, owner=blob_refs.job_owner("e1"))) == 2
    await world.run_jobs()
    await checked.imagine.rerun(ANN, "e2", Action.REROLL, "e1", ChatTarget("c1"))
    assert len(await world.db.read(embeddings.of_owner, owner=blob_refs.job_owner("e2"))) == 2
    await world.run_jobs()

    # Saving the face again replaces its embeddings; /forget deletes them all and says how many.
    await checked.faces.save(ANN, "me", (tom(),))
    again = await world.db.read(identities.find, user_id=user.id or 0, name="me")
    assert again is not None
    assert len(await world.db.read(embeddings.of_owner, owner=blob_refs.identity_owner(again.id or 0))) == 1
    receipt = await checked.account.forget_confirmed(ANN, True)
    assert receipt.text == messages.forgotten(identities=1, photos=2, embeddings=5, results=2, history=2)
    for owner_name in (blob_refs.job_owner("e1"), blob_refs.job_owner("e2")):
        assert await world.db.read(embeddings.of_owner, owner=owner_name) == []


async def test_deleting_a_face_deletes_its_embeddings(world: World, checked: LikenessService) -> None:
    await agree(checked, ANN)
    await checked.faces.save(ANN, "me", (tom(),))
    user = await world.user(ANN)
    me = await world.db.read(identities.find, user_id=user.id or 0, name="me")
    assert me is not None
    await checked.faces.delete(ANN, "me")
    assert await world.db.read(embeddings.of_owner, owner=blob_refs.identity_owner(me.id or 0)) == []


async def test_a_face_sent_with_the_judge_off_is_kept_without_embeddings(world: World, tmp_path: Path) -> None:
    settings = world_settings(tmp_path, privacy={"consent": True}, judge={"enabled": False})
    service = LikenessService(db=world.db, blobs=world.blobs, router=world.router, settings=settings)
    await service.account.accept_privacy(ANN)
    plain = jpeg(np.full((400, 400, 3), 180, dtype=np.uint8))  # no face: nothing checks it
    await service.imagine.submit(ANN, asked("e1", "a knight", plain))
    assert await world.db.read(embeddings.of_owner, owner=blob_refs.job_owner("e1")) == []


async def test_each_job_carries_the_safety_policy_of_where_it_was_asked(world: World, checked: LikenessService) -> None:
    for actor in (ANN, BOB, MEMBER):
        await agree(checked, actor)
    admin = checked.admin
    assert await admin.safety(ADMIN) == messages.safety_policy("everywhere", "block", False)
    assert await admin.safety(ADMIN, "spoiler") == messages.safety_policy("everywhere", "spoiler", True)
    with pytest.raises(UserError) as bad:
        await admin.safety(ADMIN, "maybe")
    assert bad.value.message == messages.BAD_SAFETY_POLICY
    with pytest.raises(UserError):
        await admin.safety(ANN, "allow")  # not an admin
    # A server's managers set their own server's policy; the rest of the bot keeps the global one.
    manager = Actor("discord", "399", "Mo", chat_id=GENERAL, guild_id=MEMBER.guild_id, manages_guild=True)
    assert await admin.safety(manager, "allow") == messages.safety_policy("in this server", "allow", True)

    await checked.imagine.submit(ANN, asked("e1", "a knight", tom()))
    await checked.imagine.submit(MEMBER, asked("e2", "a knight", tom()))
    await checked.imagine.submit(BOB, ImagineInput("e3", "a knight", AgeRestricted(), (tom(),)))
    policies = [(await world.job(job_id)).params[POLICY_PARAM] for job_id in ("e1", "e2", "e3")]
    assert policies == ["spoiler", "allow", "allow"]

    assert await admin.safety(ADMIN, "default") == messages.safety_policy("everywhere", "block", False)
    await checked.imagine.submit(ANN, asked("e4", "a knight", tom()))
    assert (await world.job("e4")).params[POLICY_PARAM] == "block"
