"""Saved faces: save, list, choose the default, delete; names checked, a cap per user, photos freed."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from storage import identities
from tests.bot.service.conftest import ANN, BOB, World
from tests.bot.service.conftest import face_photo as photo


async def test_faces_are_saved_listed_chosen_and_deleted(world: World) -> None:
    faces = world.service.faces
    assert (await faces.show(ANN)).text == messages.face_list([])

    assert (await faces.save(ANN, " Me ", (photo(),))).text == messages.face_saved("me", 1)
    assert (await faces.save(ANN, "work", (photo(color="tan"), photo(color="peru")))).text == messages.face_saved(
        "work", 2
    )
    assert (await faces.show(ANN)).text == messages.face_list([("me", 1, False), ("work", 2, True)])
    assert await faces.names(ANN) == ["me", "work"]
    assert await faces.names(BOB) == []  # each user sees their own

    assert (await faces.use(ANN, "ME")).text == messages.FACE_DEFAULT.format(name="me")
    assert (await faces.show(ANN)).text == messages.face_list([("me", 1, True), ("work", 2, False)])
    with pytest.raises(UserError) as unknown:
        await faces.use(ANN, "nobody")
    assert unknown.value.message == messages.NO_SUCH_FACE.format(name="nobody")

    user = await world.user(ANN)
    work = await world.db.read(identities.find, user_id=user.id or 0, name="work")
    assert work is not None
    assert (await faces.delete(ANN, "work")).text == messages.faces_deleted(1)
    for key in work.photo_keys:  # nothing else used these photos
        assert not await world.blobs.exists(key)
    with pytest.raises(UserError):
        await faces.delete(ANN, "work")
    assert (await faces.delete(ANN, None)).text == messages.faces_deleted(1)
    assert (await faces.delete(ANN, None)).text == messages.faces_deleted(0)


@pytest.mark.parametrize("name", ["", "two words", "x" * 33, "semi;colon"])
async def test_a_face_name_must_be_short_and_plain(world: World, name: str) -> None:
    with pytest.raises(UserError) as refused:
        await world.service.faces.save(ANN, name, (photo(),))
    assert refused.value.message == messages.BAD_FACE_NAME


async def test_a_face_needs_one_to_four_photos_and_usable_ones(world: World) -> None:
    faces = world.service.faces
    with pytest.raises(UserError) as none:
        await faces.save(ANN, "me", ())
    assert none.value.message == messages.FACE_NEEDS_PHOTOS
    with pytest.raises(UserError) as many:
        await faces.save(ANN, "me", (photo(),) * 5)
    assert many.value.message == messages.TOO_MANY_PHOTOS.format(limit=4)
    with pytest.raises(UserError) as text:
        await faces.save(ANN, "me", (b"not a photo",))
    assert text.value.message == messages.PHOTO_NOT_IMAGE
    assert await faces.names(ANN) == []


async def test_faces_are_capped_per_user_but_replacing_one_is_fine(world: World) -> None:
    faces = world.service.faces  # the world allows two
    await faces.save(ANN, "one", (photo(),))
    await faces.save(ANN, "two", (photo(),))
    with pytest.raises(UserError) as capped:
        await faces.save(ANN, "three", (photo(),))
    assert capped.value.message == messages.face_cap(2)

    user = await world.user(ANN)
    old = await world.db.read(identities.find, user_id=user.id or 0, name="one")
    assert old is not None
    assert (await faces.save(ANN, "one", (photo(color="navy"),))).text == messages.face_saved("one", 1)
    new = await world.db.read(identities.find, user_id=user.id or 0, name="one")
    assert new is not None and new.photo_keys != old.photo_keys
    # The replaced photo is freed unless another face still uses it ("two" has the same bytes).
    assert await world.blobs.exists(old.photo_keys[0])
    await faces.delete(ANN, "two")
    assert not await world.blobs.exists(old.photo_keys[0])
