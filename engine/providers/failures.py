"""Turning a provider's failed answer into the engine's failure kinds, with our secrets kept out of the text."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from engine.errors import (
    AuthError,
    BackendError,
    ContentPolicyError,
    InvalidInputError,
    NoFaceError,
    OutOfCreditError,
    ProtocolError,
    ProviderFailedError,
    TransientError,
    UnknownOutcomeError,
)

T = TypeVar("T")

DETAIL_CHARS = 300

_CREDIT_WORDS = re.compile(
    r"insufficient (balance|credit|fund)|not enough credit|exhausted balance|user is locked|"
    r"balance is not enough|out of credit",
    re.IGNORECASE,
)
_CONTENT_WORDS = re.compile(r"nsfw|content polic|safety|inappropriate|sensitive content", re.IGNORECASE)
_FACE_WORDS = re.compile(r"no face|face not (found|detected)|could not (find|detect) (a |any )?face", re.IGNORECASE)
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


class MalformedReplyError(ProtocolError):
    """An answer that could not be parsed; retried on idempotent calls before becoming a ProtocolError."""


@dataclass(frozen=True)
class HttpFailure:
    """A provider's non-success answer, as every classifier sees it."""

    status: int
    message: str  # the provider's own words, already cleaned of secrets
    headers: Mapping[str, str]
    submit: bool  # the answer to a (billed) submit rather than to an idempotent call
    text: str  # what the error detail says: who answered what
    retry_after: float | None


# A provider's own rules, asked first; None leaves the failure to the shared rules.
VendorRules = Callable[[HttpFailure], BackendError | None]


def no_vendor_rules(failure: HttpFailure) -> BackendError | None:
    return None


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def first_line(text: str) -> str:
    return text.splitlines()[0][:DETAIL_CHARS] if text else ""


def provider_message(payload: Any) -> str:
    """The human part of a provider's error body, whatever its shape."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, list):
        return "; ".join(provider_message(item) for item in payload[:5])
    if isinstance(payload, dict):
        for key in ("detail", "error", "message", "msg", "title"):
            value = payload.get(key)
            if value:
                text = provider_message(value)
                loc = payload.get("loc")
                if key == "msg" and isinstance(loc, list):
                    text = f"{'.'.join(str(part) for part in loc)}: {text}"
                return text
    return ""


def body_message(body: bytes, content_type: str) -> str:
    """The message in an error answer's body: its JSON's human part, or the start of its text."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if payload is not None:
        message = provider_message(payload)
        if message:
            return message
    if content_type.startswith("text/html"):
        return "HTML page"
    return body[:DETAIL_CHARS].decode("utf-8", "replace")


def retry_after_s(headers: Mapping[str, str], message: str = "", *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), or a provider's "resets in ~Ns" hint."""
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    hint = _RESETS_IN.search(message)
    if hint:
        return float(hint.group(1))
    return None


def classify(failure: HttpFailure, vendor: VendorRules = no_vendor_rules) -> BackendError:
    """Map a provider's non-success answer to the engine's failure kinds: the provider's own rules first."""
    special = vendor(failure)
    if special is not None:
        return special
    status, message, text = failure.status, failure.message, failure.text
    if status == 429:
        return TransientError(text, retry_after=failure.retry_after)
    if 400 <= status < 500 and _CREDIT_WORDS.search(message):
        return OutOfCreditError(text)
    if status in (401, 403):
        return AuthError(text)
    if status == 404:
        return AuthError(text) if failure.submit else ProviderFailedError(text)
    if status == 408:
        return TransientError(text, retry_after=failure.retry_after)
    if 400 <= status < 500:
        return job_failure(message, text, invalid=True)
    if status >= 500:
        if failure.submit and status == 504:
            # A gateway gave up waiting on the provider: the job may have been accepted all the same.
            return UnknownOutcomeError(f"{text} (outcome unknown: the provider may have billed it)")
        return TransientError(text, retry_after=failure.retry_after)
    return ProviderFailedError(text)


def job_failure(message: str, text: str | None = None, *, invalid: bool = False) -> BackendError:
    """Classify a failure the provider reported for the job itself (a failed status or a 4xx body)."""
    text = text or message or "the provider reported a failure without a message"
    if _CREDIT_WORDS.search(message):
        return OutOfCreditError(text)
    if _CONTENT_WORDS.search(message):
        return ContentPolicyError(text)
    if _FACE_WORDS.search(message):
        return NoFaceError(text)
    return InvalidInputError(text) if invalid else ProviderFailedError(text)


def model_or_protocol(factory: Callable[[Any], T], payload: Any, what: str) -> T:
    """Validate a provider payload, turning validation errors into MalformedReplyError."""
    try:
        return factory(payload)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise MalformedReplyError(f"{what}: unexpected answer shape ({first_line(str(exc))})") from None
