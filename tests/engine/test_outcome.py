"""How each way an attempt can end maps to one ledger transition, with the reason the job records."""

from __future__ import annotations

import asyncio

import pytest

from engine.backend import GenerationResult, OutputImage
from engine.errors import (
    BackendError,
    ContentPolicyError,
    FailureKind,
    OutOfCreditError,
    PhotoMissingError,
    TransientError,
    UnknownOutcomeError,
)
from engine.outcome import NoBackendError, Record, RetryLater, Settlement, settle

RESULT = GenerationResult((OutputImage(b"png", "image/png", 8, 8),), seed="7", spend_usd=0.02)


def test_a_result_completes_the_job() -> None:
    assert settle(result=RESULT) == Settlement(Record.COMPLETE, result=RESULT)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ContentPolicyError("refused"), FailureKind.CONTENT_POLICY),
        (OutOfCreditError("402"), FailureKind.OUT_OF_CREDIT),
        (TransientError("503 past the retries"), FailureKind.TRANSIENT),
        (UnknownOutcomeError("submit timed out"), FailureKind.UNKNOWN_OUTCOME),
    ],
)
def test_a_backend_failure_fails_the_job_with_its_kind(error: BackendError, reason: FailureKind) -> None:
    settlement = settle(error=error)
    assert settlement == Settlement(Record.FAIL, str(reason), error.detail)
    assert settlement.crash is None


def test_a_long_backend_detail_is_cut_for_the_ledger() -> None:
    assert len(settle(error=ContentPolicyError("x" * 5000)).detail) == 1024


def test_a_long_wait_puts_the_job_back_in_the_queue() -> None:
    settlement = settle(error=RetryLater(60.0, FailureKind.TRANSIENT))
    assert settlement == Settlement(Record.RETRY_LATER, "transient", delay_s=60.0)


def test_no_backend_and_a_missing_photo_fail_with_their_own_reasons() -> None:
    assert settle(error=NoBackendError()).reason == "no_backend"
    assert settle(error=PhotoMissingError("ab" * 32)).reason == "photo_missing"


def test_a_crash_fails_the_job_as_internal_and_keeps_the_error_for_the_log() -> None:
    crash = KeyError("some bug")  # any KeyError is a bug now: a missing photo has its own error
    settlement = settle(error=crash)
    assert (settlement.record, settlement.reason, settlement.detail) == (Record.FAIL, "internal", "KeyError")
    assert settlement.crash is crash


def test_the_heartbeats_flags_win_over_the_render() -> None:
    # A cancelled render ends in CancelledError; a finished one may race the flag: the flag decides.
    for error in (asyncio.CancelledError(), None):
        assert settle(error=error, result=RESULT, cancel_requested=True).record is Record.CANCEL
        assert settle(error=error, result=RESULT, deadline_hit=True) == Settlement(Record.FAIL, "deadline")
        assert settle(error=error, result=RESULT, lost=True).record is Record.NOTHING
    # Losing the lease beats everything (the job is someone else's), then a cancel, then the deadline.
    assert settle(lost=True, cancel_requested=True, deadline_hit=True).record is Record.NOTHING
    assert settle(cancel_requested=True, deadline_hit=True).record is Record.CANCEL
    assert settle(deadline_hit=True, error=RetryLater(60.0, FailureKind.TRANSIENT)).reason == "deadline"
