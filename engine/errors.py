"""Backend failures, classified once so the dispatcher knows whether to retry, fail over or stop."""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # 429, 5xx, timeouts on idempotent calls: retry with backoff
    OUT_OF_CREDIT = "out_of_credit"  # the operator's account is empty: open the circuit, fail over
    UNKNOWN_OUTCOME = "unknown_outcome"  # a submit may have reached the provider: never re-send
    CONTENT_POLICY = "content_policy"  # the provider refused the prompt or photo
    INVALID_INPUT = "invalid_input"  # the request itself is wrong for this backend (4xx validation)
    NO_FACE = "no_face"  # no usable face in the photo
    AUTH = "auth"  # bad key or model not found: an operator problem
    PROTOCOL = "protocol"  # malformed answers past the retry budget
    OUTPUT_EXPIRED = "output_expired"  # the result could not be downloaded any more
    PROVIDER_FAILED = "provider_failed"  # the provider reported the job failed
    OVER_BUDGET = "over_budget"  # starting it would pass the operator's daily budget for the backend
    UNSAFE_OUTPUT = "unsafe_output"  # the safety check flagged an output where the policy blocks it


class BackendError(Exception):
    """A classified failure. ``detail`` is for the operator log, never shown to users."""

    kind: FailureKind = FailureKind.PROVIDER_FAILED

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class TransientError(BackendError):
    kind = FailureKind.TRANSIENT


class OutOfCreditError(BackendError):
    kind = FailureKind.OUT_OF_CREDIT


class UnknownOutcomeError(BackendError):
    kind = FailureKind.UNKNOWN_OUTCOME


class ContentPolicyError(BackendError):
    kind = FailureKind.CONTENT_POLICY


class InvalidInputError(BackendError):
    kind = FailureKind.INVALID_INPUT


class NoFaceError(BackendError):
    kind = FailureKind.NO_FACE


class AuthError(BackendError):
    kind = FailureKind.AUTH


class ProtocolError(BackendError):
    kind = FailureKind.PROTOCOL


class OutputExpiredError(BackendError):
    kind = FailureKind.OUTPUT_EXPIRED


class ProviderFailedError(BackendError):
    kind = FailureKind.PROVIDER_FAILED


class UnsafeOutputError(BackendError):
    """An output was flagged unsafe where the policy blocks it: the job fails, refunded, with the provider's
    spend on the renders still recorded."""

    kind = FailureKind.UNSAFE_OUTPUT

    def __init__(self, detail: str, *, spend_usd: float = 0.0) -> None:
        super().__init__(detail)
        self.spend_usd = spend_usd


class PhotoMissingError(Exception):
    """A face photo the job refers to is no longer in the blob store (retention or ``/forget`` removed it).

    Not a backend failure: no backend could render the job, so it fails at once without failing over.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
