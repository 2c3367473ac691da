"""What Discord checks in a message payload, and how a create or an edit changes the message."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from tests.fakes.discord.models import (
    IS_COMPONENTS_V2,
    LOADING,
    FakeAttachment,
    Json,
    SentMessage,
    now_iso,
    walk_components,
)
from tests.fakes.discord.protocol import ApiError, FilePart, form_error

AttachFile = Callable[[str, FilePart, str | None], FakeAttachment]

PREMIUM = 6  # button style
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


def apply_payload(
    message: SentMessage,
    payload: Json,
    files: Sequence[FilePart],
    size_limit: int,
    *,
    creating: bool,
    attach: AttachFile,
) -> None:
    """Validate like Discord does, then write ``payload`` (and uploads) into ``message``.

    ``attach`` stores one uploaded part on the CDN under the name and description the payload gives it."""
    for part in files:
        if len(part.data) > size_limit:
            raise ApiError(413, 40005, "Request entity too large")
    new_parts: dict[int, FilePart] = {}
    for index, part in enumerate(files):
        matched = _FILE_FIELD.match(part.field)
        new_parts[int(matched.group(1)) if matched else index] = part
    content = payload.get("content", message.content) or ""
    embeds = list(payload["embeds"] or []) if "embeds" in payload else message.embeds
    components = list(payload["components"] or []) if "components" in payload else message.components
    flags = message.flags
    if creating:
        flags = int(payload.get("flags") or 0)

    attachments: list[FakeAttachment] = []
    used: set[int] = set()
    if "attachments" in payload:
        existing = {a.id: a for a in message.attachments}
        for entry in payload["attachments"] or []:
            key = int(entry["id"])
            if key in existing:
                attachments.append(existing[key])
            elif key in new_parts:
                part = new_parts[key]
                filename = entry.get("filename") or part.filename
                attachments.append(attach(filename, part, entry.get("description")))
                used.add(key)
            else:
                raise form_error("attachments", "ATTACHMENT_NOT_FOUND", f"Attachment {key} not found")
    else:
        attachments = list(message.attachments)
    for key, part in new_parts.items():
        if key not in used:
            attachments.append(attach(part.filename, part, None))

    if len(content) > 2000:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    if len(embeds) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if len(attachments) > 10:
        raise form_error("attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    validate_components(components, flags)
    if creating and not (content or embeds or attachments or components or flags & LOADING):
        raise ApiError(400, 50006, "Cannot send an empty message")

    if not creating:
        message.edits.append(payload)
        message.edited_timestamp = now_iso()
    message.content, message.embeds, message.components = content, embeds, components
    message.attachments, message.flags = attachments, flags
    for attachment in attachments:
        attachment.ephemeral = message.ephemeral


def validate_components(components: Sequence[Json], flags: int) -> None:
    if not flags & IS_COMPONENTS_V2:
        if len(components) > 5:
            raise form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for index, row in enumerate(components):
            if row.get("type") != 1:
                raise form_error(f"components.{index}.type", "BASE_TYPE_CHOICES", "Value must be one of {1}.")
            if len(row.get("components") or []) > 5:
                raise form_error(
                    f"components.{index}.components",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 5 or fewer in length.",
                )
    seen: set[str] = set()
    for component in walk_components(components):
        if component.get("type") == 2 and component.get("style") == PREMIUM:
            # A premium button opens the store for its SKU: it carries nothing else.
            if not component.get("sku_id"):
                raise form_error("components", "BASE_TYPE_REQUIRED", "sku_id is required for premium buttons")
            if any(component.get(key) for key in ("custom_id", "label", "url", "emoji")):
                raise form_error("components", "BUTTON_COMPONENT_INVALID", "Premium buttons take only a sku_id")
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if not 1 <= len(custom_id) <= 100:
            raise form_error("components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if custom_id in seen:
            raise form_error("components", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
        seen.add(custom_id)
