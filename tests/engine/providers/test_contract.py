"""The contract every provider backend keeps, run against each provider's fake: the same failures, the same
answers, whatever the provider's protocol."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.backend import ProviderRef
from engine.errors import (
    AuthError,
    ContentPolicyError,
    InvalidInputError,
    OutOfCreditError,
    ProtocolError,
    TransientError,
    UnknownOutcomeError,
)
from engine.providers.client import RetryPolicy, Timeouts
from engine.providers.remote import PollSchedule, WaitExceededError
from engine.request import GenerationRequest
from tests.engine.providers.kits import CANCELLABLE, KITS, POLLED, Kit
from tests.fakes.providers_common import Fault, RecordingProgress, eventually, html_page, malformed_json

every = pytest.mark.parametrize("kit", list(KITS), indirect=True)
polled = pytest.mark.parametrize("kit", POLLED, indirect=True)
cancellable = pytest.mark.parametrize("kit", CANCELLABLE, indirect=True)

PATIENT = Timeouts(request_s=5, submit_s=5, connect_s=1, download_s=5, cancel_s=0.5)


class WorkerDied(Exception):
    pass


def crash() -> None:
    raise WorkerDied


@every
async def test_round_trip(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    polls_when_stored: list[int] = []
    progress = RecordingProgress(on_submitted=lambda: polls_when_stored.append(kit.polls()))

    result = await kit.backend().generate(kit.request(seed=7), progress)

    assert kit.submits() == 1 and kit.fake.accepted == 1
    assert result.images and all(image.data for image in result.images)
    assert result.seed is not None
    assert result.spend_usd > 0
    assert progress.updates  # the user saw the job move
    if kit.synchronous:
        assert progress.refs == []
    else:
        (ref,) = progress.refs
        assert ref.backend == kit.name and ref.request_id
        assert polls_when_stored == [0]  # the request id was stored before the first poll
        assert kit.polls() == kit.polls_to_finish
    assert kit.cancels() == 0
    assert caplog.records and kit.key not in caplog.text


@every
async def test_wrong_key_is_an_auth_error_and_stays_secret(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-secret-key-123"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as caught:
        await kit.backend(key=secret).generate(kit.request(), RecordingProgress())
    (refused,) = kit.fake.log  # the first call was refused and nothing was retried
    assert secret in str(refused.headers)
    assert kit.fake.accepted == 0
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in caplog.text


@every
async def test_without_a_key_unavailable_and_silent(kit: Kit) -> None:
    backend = kit.unconfigured()
    reason = backend.unavailable_reason()
    assert reason is not None and "LIKENESS_" in reason
    with pytest.raises(AuthError):
        await backend.generate(kit.request(), RecordingProgress())
    assert kit.fake.log == []


@every
async def test_out_of_credit(kit: Kit) -> None:
    kit.out_of_credit()
    with pytest.raises(OutOfCreditError):
        await kit.backend().generate(kit.request(), RecordingProgress())
    assert kit.submits() == 1 and kit.fake.accepted == 0


@every
async def test_submit_429_hands_retry_after_back_without_resending(kit: Kit) -> None:
    kit.fake.fail(kit.submit_route, kit.error(429, "Too many requests", {"Retry-After": "7"}))
    progress = RecordingProgress()
    with pytest.raises(TransientError) as caught:
        await kit.backend().generate(kit.request(), progress)
    assert caught.value.retry_after == 7
    assert kit.submits() == 1 and kit.fake.accepted == 0
    assert progress.refs == [] and kit.polls() == 0


@polled
async def test_poll_429_waits_retry_after(kit: Kit) -> None:
    assert kit.poll_route is not None
    kit.fake.fail(kit.poll_route, kit.error(429, "slow down", {"Retry-After": "3"}))
    result = await kit.backend().generate(kit.request(), RecordingProgress())
    assert result.images
    assert 3.0 in kit.clock.sleeps
    assert kit.polls() == kit.polls_to_finish + 1 and kit.submits() == 1


@every
async def test_submit_5xx_then_the_next_attempt_succeeds(kit: Kit) -> None:
    kit.fake.fail(kit.submit_route, kit.error(503, "service unavailable"))
    backend = kit.backend()
    with pytest.raises(TransientError):
        await backend.generate(kit.request(), RecordingProgress())
    result = await backend.generate(kit.request(), RecordingProgress())  # the dispatcher's next attempt
    assert result.images
    assert kit.submits() == 2 and kit.fake.accepted == 1


@polled
async def test_poll_5xx_and_html_are_retried(kit: Kit) -> None:
    assert kit.poll_route is not None
    kit.fake.fail(kit.poll_route, kit.error(500, "internal error"), html_page(502))
    result = await kit.backend().generate(kit.request(), RecordingProgress())
    assert result.images
    assert kit.polls() == kit.polls_to_finish + 2 and kit.submits() == 1


@every
async def test_submit_hang_is_unknown_outcome_and_never_resent(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kit.fake.fail(kit.submit_route, Fault(passthrough=True, hang_s=5))
    progress = RecordingProgress()
    with pytest.raises(UnknownOutcomeError) as caught:
        await kit.backend().generate(kit.request(), progress)
    assert "billed" in caught.value.detail
    assert kit.submits() == 1
    assert kit.fake.accepted == 1  # the provider did take the job
    assert progress.refs == []
    assert kit.key not in str(caught.value) and kit.key not in caplog.text


@every
async def test_lost_answer_to_submit_is_unknown_outcome(kit: Kit) -> None:
    kit.fake.fail(kit.submit_route, Fault(passthrough=True, drop=True))
    with pytest.raises(UnknownOutcomeError):
        await kit.backend().generate(kit.request(), RecordingProgress())
    assert kit.submits() == 1
    assert kit.fake.accepted == 1  # the provider took the job before the connection dropped


@every
async def test_gateway_timeout_on_submit_is_unknown_outcome(kit: Kit) -> None:
    kit.fake.fail(kit.submit_route, kit.error(504, "Gateway Timeout"))
    with pytest.raises(UnknownOutcomeError):
        await kit.backend().generate(kit.request(), RecordingProgress())
    assert kit.submits() == 1


@polled
async def test_poll_hang_is_retried(kit: Kit) -> None:
    assert kit.poll_route is not None
    kit.fake.fail(kit.poll_route, Fault(hang_s=5))
    result = await kit.backend().generate(kit.request(), RecordingProgress())
    assert result.images
    assert kit.polls() == kit.polls_to_finish + 1 and kit.submits() == 1


@every
async def test_malformed_answer_to_submit_is_an_unknown_outcome_never_resent(kit: Kit) -> None:
    kit.fake.fail(kit.submit_route, malformed_json())
    progress = RecordingProgress()
    with pytest.raises(UnknownOutcomeError) as caught:
        await kit.backend().generate(kit.request(), progress)
    assert "billed" in caught.value.detail
    assert kit.submits() == 1 and kit.polls() == 0
    assert progress.submits == 1 and progress.refs == []  # announced before it was sent, never answered


@polled
async def test_a_download_that_is_no_image_is_fetched_again(kit: Kit) -> None:
    kit.fake.fail("cdn", Fault(status=200, text="<html><body>Service busy</body></html>", content_type="text/html"))
    assert (await kit.backend().generate(kit.request(), RecordingProgress())).images
    assert len(kit.fake.requests("cdn")) == 2 and kit.submits() == 1


@polled
async def test_malformed_poll_answers_are_retried_within_a_budget(kit: Kit) -> None:
    assert kit.poll_route is not None
    kit.fake.fail(kit.poll_route, malformed_json())
    assert (await kit.backend().generate(kit.request(), RecordingProgress())).images
    assert kit.polls() == kit.polls_to_finish + 1

    kit.fake.fail(kit.poll_route, *[malformed_json() for _ in range(4)])
    before = kit.polls()
    with pytest.raises(ProtocolError):
        await kit.backend(retry=RetryPolicy(attempts=4)).generate(kit.request(), RecordingProgress())
    assert kit.polls() - before == 4  # the retry budget, then stop
    assert kit.submits() == 2


@every
async def test_content_policy_refusal(kit: Kit) -> None:
    kit.refuse_content()
    with pytest.raises(ContentPolicyError) as caught:
        await kit.backend().generate(kit.request(), RecordingProgress())
    assert "NSFW" in caught.value.detail
    assert kit.submits() == 1


@every
async def test_provider_validation_error_is_invalid_input(kit: Kit) -> None:
    with pytest.raises(InvalidInputError):
        await kit.backend().generate(kit.invalid_request(), RecordingProgress())
    assert kit.fake.accepted == 0


@every
async def test_no_face_is_refused_before_any_call(kit: Kit) -> None:
    with pytest.raises(InvalidInputError):
        await kit.backend().generate(GenerationRequest(prompt="p", faces=()), RecordingProgress())
    assert kit.fake.log == []


@every
async def test_cancel_reaches_the_provider_where_it_can(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    kit.stick()
    progress = RecordingProgress()
    task = asyncio.create_task(kit.backend(timeouts=PATIENT).generate(kit.request(), progress))
    if kit.synchronous:
        await eventually(lambda: kit.submits() == 1)
    else:
        await eventually(lambda: kit.polls() >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kit.submits() == 1
    if kit.cancel_route is None:
        assert kit.cancels() == 0
        if not kit.synchronous:
            assert "abandoned" in caplog.text
        return
    (cancel,) = kit.fake.requests(kit.cancel_route)
    assert kit.key in str(cancel.headers)
    assert kit.cancelled_at_provider(progress.refs[0].request_id)


@cancellable
async def test_an_abandoned_job_is_left_running(kit: Kit) -> None:
    kit.stick()
    progress = RecordingProgress()
    progress.abandoned = True  # shutdown: another worker resumes it
    task = asyncio.create_task(kit.backend().generate(kit.request(), progress))
    await eventually(lambda: kit.polls() >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kit.cancels() == 0
    assert not kit.cancelled_at_provider(progress.refs[0].request_id)


@polled
async def test_waiting_too_long_gives_up_and_cancels_where_it_can(kit: Kit) -> None:
    kit.stick()
    schedule = PollSchedule(first_s=2, factor=2, max_s=10, max_wait_s=60)
    with pytest.raises(WaitExceededError):
        await kit.backend(schedule=schedule).generate(kit.request(), RecordingProgress())
    assert 3 <= kit.polls() <= 10
    assert kit.cancels() == (0 if kit.cancel_route is None else 1)


@every
async def test_resume_after_a_restart_submits_nothing(kit: Kit) -> None:
    backend = kit.backend()
    if kit.synchronous:
        ref = ProviderRef(backend=kit.name, request_id="from-an-earlier-attempt")
        with pytest.raises(UnknownOutcomeError):
            await backend.generate(kit.request(), RecordingProgress(resume=ref))
        assert kit.fake.log == []
        return
    first = RecordingProgress(on_submitted=crash)  # the worker dies right after storing the ref
    with pytest.raises(WorkerDied):
        await backend.generate(kit.request(), first)
    assert kit.cancels() == 0
    calls_before = len(kit.fake.log)

    ref = ProviderRef.from_json(first.refs[0].to_json())  # as stored and read back
    resumed = RecordingProgress(resume=ref)
    result = await kit.backend().generate(kit.request(), resumed)
    assert result.images
    assert kit.submits() == 1 and kit.fake.accepted == 1
    assert resumed.refs == []
    new_routes = {entry.route for entry in kit.fake.log[calls_before:]}
    assert kit.submit_route not in new_routes and "upload" not in new_routes and "files" not in new_routes
    assert all(ref.request_id in entry.path for entry in kit.fake.requests(kit.poll_route))


@polled
async def test_resume_refuses_another_backends_request(kit: Kit) -> None:
    ref = ProviderRef(backend="some-other-backend", request_id="x")
    with pytest.raises(Exception, match="cannot resume"):
        await kit.backend().generate(kit.request(), RecordingProgress(resume=ref))
    assert kit.fake.log == []


@every
async def test_concurrency_stays_under_a_semaphore(kit: Kit) -> None:
    backend = kit.backend()
    gate = asyncio.Semaphore(2)

    async def one() -> None:
        async with gate:
            await backend.generate(kit.request(), RecordingProgress())

    await asyncio.gather(*(one() for _ in range(4)))
    assert kit.fake.accepted == 4
    # A synchronous call may finish before the next one starts; queued jobs overlap for several polls.
    assert kit.fake.high_water <= 2 if kit.synchronous else kit.fake.high_water == 2
    assert kit.fake.in_flight == 0
