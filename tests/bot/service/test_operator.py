"""Operator jobs (`likeness generate`): submitted through the service, free, pinned when asked, written out."""

from __future__ import annotations

import pytest

from bot.errors import OperatorError
from bot.intake import normalize_photo
from bot.service.operator import OPERATOR_ID, OPERATOR_PLATFORM, OperatorJobs
from engine.errors import ContentPolicyError
from engine.request import GenerationRequest
from storage import users
from tests.bot.service.conftest import World, face_photo
from tests.bot.service.scripted import tiny_png


def operator_jobs(world: World) -> OperatorJobs:
    return OperatorJobs(db=world.db, blobs=world.blobs, router=world.router, queue=world.settings.queue)


def request(**values: object) -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse keeper", faces=(normalize_photo(face_photo()),), **values)  # type: ignore[arg-type]


async def test_an_operator_job_runs_free_and_its_outputs_are_named_after_it(world: World) -> None:
    operator = operator_jobs(world)
    job_id = await operator.submit(request(seed=7, num_images=2), backend="scripted")
    assert job_id.startswith("cli-")
    assert await operator.finished(job_id) is None

    await world.run_jobs()
    finished = await operator.finished(job_id)
    assert finished is not None and finished.succeeded and finished.error is None
    job = await world.job(job_id)
    assert (job.cost, job.pinned, job.route, job.params["seed"]) == (0, True, ["scripted"], 7)
    assert job.reply_target == {"platform": OPERATOR_PLATFORM}
    owner = await world.db.read(users.find_user, platform=OPERATOR_PLATFORM, platform_user_id=OPERATOR_ID)
    assert owner is not None and owner.unlimited and owner.tier == "operator" and owner.credits == 0

    outputs = await operator.outputs(job_id)
    assert [(image.filename, image.data) for image in outputs] == [
        (f"{job_id}-1.png", tiny_png()),
        (f"{job_id}-2.png", tiny_png()),
    ]
    # Chat delivery never picks it up, and once written it counts as delivered.
    assert await world.service.results.pending(["telegram", "discord"]) == []
    await operator.written(job_id)
    job = await world.job(job_id)
    assert (job.delivery_state, job.delivery_path) == ("delivered", "file")


async def test_without_a_backend_the_route_applies_and_failover_is_allowed(world: World) -> None:
    job_id = await operator_jobs(world).submit(request())
    job = await world.job(job_id)
    assert (job.pinned, job.route) == (False, ["scripted"])


async def test_a_failed_operator_job_says_how_it_ended(world: World) -> None:
    world.backend.fail = ContentPolicyError("flagged")
    operator = operator_jobs(world)
    job_id = await operator.submit(request())
    await world.run_jobs()
    finished = await operator.finished(job_id)
    assert finished is not None and not finished.succeeded
    assert (finished.state, finished.error) == ("failed", "content_policy")


async def test_refusals_are_one_line_for_the_operator(world: World) -> None:
    operator = operator_jobs(world)
    with pytest.raises(OperatorError) as unknown:
        await operator.submit(request(), backend="nowhere")
    assert unknown.value.message == "unknown backend 'nowhere'"
    with pytest.raises(OperatorError) as out_of_range:
        await operator.submit(request(steps=90), backend="scripted")
    assert out_of_range.value.message == "No backend can take these settings: • steps 90 on scripted: allowed 1–50"
    world.backend.down = "no key"
    with pytest.raises(OperatorError) as down:
        await operator.submit(request())
    assert down.value.message == "no backend available: scripted: no key"
    # Refused before anything was stored.
    assert await world.db.read(users.find_user, platform=OPERATOR_PLATFORM, platform_user_id=OPERATOR_ID) is None
