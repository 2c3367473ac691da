"""Forgetting through the use cases: nothing personal is left behind, the name included."""

from __future__ import annotations

from bot import messages
from bot.service.imagine import ImagineInput
from tests.bot.service.conftest import ANN, BOB, ChatTarget, World
from tests.bot.service.conftest import face_photo as photo


async def test_forget_clears_the_display_name_and_keeps_other_users(world: World) -> None:
    account = world.service.account
    await world.service.imagine.submit(ANN, ImagineInput("e1", "a knight", ChatTarget("c1"), (photo(),)))
    await world.service.imagine.submit(BOB, ImagineInput("e2", "a bard", ChatTarget("c2"), (photo(),)))
    await world.run_jobs()
    assert (await world.user(ANN)).display_name == ANN.display_name != ""

    receipt = messages.forgotten(identities=0, photos=1, embeddings=0, results=1, history=1)
    assert (await account.forget_confirmed(ANN, True)).text == receipt
    assert (await world.user(ANN)).display_name == ""
    # Coming back does not bring the old name back: it was theirs to have deleted.
    await account.start(ANN)
    assert (await world.user(ANN)).display_name == ""
    assert (await world.user(BOB)).display_name == BOB.display_name
    assert (await world.job("e2")).face_keys
