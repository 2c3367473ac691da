"""Application commands as Discord stores them, and the interactions it creates when users invoke them."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tests.fakes.discord.models import (
    ALL_PERMISSIONS,
    UPLOAD_LIMITS,
    FakeChannel,
    FakeRole,
    FakeUser,
    InteractionRecord,
    Json,
    SentMessage,
    Upload,
)
from tests.fakes.discord.protocol import form_error
from tests.fakes.discord.state import DiscordState

# Discord's rule for command and option names: ^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$, in lowercase
# where the script has case (Python's \w stands for the letters and digits).
_COMMAND_NAME = re.compile(r"^(?=[^A-Z]*$)(?:[-_]|[^\W_]){1,32}$")


def register_command(state: DiscordState, guild_id: int | None, raw: Json, index: int) -> Json:
    kind = int(raw.get("type") or 1)
    name = str(raw.get("name") or "")
    description = str(raw.get("description") or "")
    if kind == 1:
        if not _COMMAND_NAME.match(name):
            raise form_error(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not 1 <= len(description) <= 100:
            raise form_error(f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if len(raw.get("options") or []) > 25:
            raise form_error(f"{index}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for locale, localized in (raw.get("name_localizations") or {}).items():
            if not _COMMAND_NAME.match(str(localized)):
                where = f"{index}.name_localizations.{locale}"
                raise form_error(where, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    command_id = state.command_ids.setdefault((guild_id, name), state.ids.next())
    stored: Json = {
        "id": str(command_id),
        "application_id": str(state.application_id),
        "version": str(state.ids.next()),
        "type": kind,
        "name": name,
        "description": description,
        # Discord keeps the localizations as sent and shows each user the one for their client's locale.
        "name_localizations": raw.get("name_localizations"),
        "description_localizations": raw.get("description_localizations"),
        "options": raw.get("options") or [],
        "default_member_permissions": raw.get("default_member_permissions"),
        "nsfw": bool(raw.get("nsfw")),
        "contexts": raw.get("contexts"),
        "integration_types": raw.get("integration_types") or [0],
    }
    if guild_id is not None:
        stored["guild_id"] = str(guild_id)
    return stored


def _command_schema(state: DiscordState, channel: FakeChannel, path: Sequence[str]) -> tuple[Json | None, int | None]:
    guild_id = channel.guild_id
    found = None
    if guild_id is not None:
        found = next((c for c in state.guild_commands.get(guild_id, []) if c["name"] == path[0]), None)
    if found is None:
        found = next((c for c in state.global_commands if c["name"] == path[0]), None)
        guild_id = None
    node = found
    for part in path[1:]:
        if node is None:
            break
        node = next((o for o in node.get("options") or [] if o["name"] == part), None)
    return node, (guild_id if found is not None else None)


def command_data(
    state: DiscordState, channel: FakeChannel, name: str, values: Mapping[str, Any], focused: str | None
) -> Json:
    path = name.split()
    schema, command_guild = _command_schema(state, channel, path)
    declared = {o["name"]: int(o["type"]) for o in (schema or {}).get("options") or []}
    options: list[Json] = []
    resolved: dict[str, Json] = {}
    for key, value in values.items():
        option = _option(state, key, value, declared.get(key), channel, resolved)
        if key == focused:
            option["focused"] = True
            option["value"] = str(value)
        options.append(option)
    for depth in range(len(path) - 1, 0, -1):
        options = [{"name": path[depth], "type": 1 if depth == len(path) - 1 else 2, "options": options}]
    command_id = state.command_ids.setdefault((command_guild, path[0]), state.ids.next())
    data: Json = {"id": str(command_id), "name": path[0], "type": 1, "options": options}
    if resolved:
        data["resolved"] = resolved
    if command_guild is not None:
        data["guild_id"] = str(command_guild)
    return data


def _option(
    state: DiscordState, name: str, value: Any, declared: int | None, channel: FakeChannel, resolved: Json
) -> Json:
    if isinstance(value, Upload):
        attachment = state.attachment(channel.id, value.filename, value.data, value.content_type)
        resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
        return {"name": name, "type": 11, "value": str(attachment.id)}
    if isinstance(value, FakeUser):
        resolved.setdefault("users", {})[str(value.id)] = value.payload()
        guild = state.guilds.get(channel.guild_id or 0)
        if guild is not None and value.id in guild.members:
            member = {k: v for k, v in guild.members[value.id].payload().items() if k != "user"}
            member["permissions"] = str(guild.permissions_of(value.id))
            resolved.setdefault("members", {})[str(value.id)] = member
        return {"name": name, "type": 6, "value": str(value.id)}
    if isinstance(value, FakeChannel):
        entry = {**value.payload(), "permissions": str(ALL_PERMISSIONS)}
        resolved.setdefault("channels", {})[str(value.id)] = entry
        return {"name": name, "type": 7, "value": str(value.id)}
    if isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return {"name": name, "type": 8, "value": str(value.id)}
    if isinstance(value, bool):
        kind = 5
    elif isinstance(value, int):
        kind = 10 if declared == 10 else 4
    elif isinstance(value, float):
        kind = 10
    else:
        kind, value = 3, str(value)
    return {"name": name, "type": kind, "value": value}


def interaction_create(
    state: DiscordState,
    kind: int,
    user: FakeUser,
    channel: FakeChannel,
    data: Json,
    *,
    message: SentMessage | None = None,
    locale: str,
) -> InteractionRecord:
    """The INTERACTION_CREATE payload Discord would send for what ``user`` did, recorded by its token."""
    token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(96)
    payload: Json = {
        "id": str(state.ids.next()),
        "application_id": str(state.application_id),
        "type": kind,
        "token": token,
        "version": 1,
        "data": data,
        "channel_id": str(channel.id),
        "app_permissions": str(state.app_permissions(channel)),
        "locale": locale,
        "entitlements": state.monetization.active_for(user.id),
        "attachment_size_limit": UPLOAD_LIMITS[0],
    }
    if channel.guild_id is not None:
        guild = state.guilds[channel.guild_id]
        if user.id not in guild.members:
            raise ValueError(f"{user.username} is not a member of {guild.name}")
        permissions = str(guild.permissions_of(user.id))
        payload.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
            guild_locale=guild.preferred_locale,
            channel={**channel.payload(), "permissions": permissions},
            member={**guild.members[user.id].payload(), "permissions": permissions},
            authorizing_integration_owners={"0": str(guild.id)},
            context=0,
            attachment_size_limit=guild.attachment_size_limit,
        )
    else:
        if channel.recipient is not user:
            raise ValueError(f"{user.username} is not the recipient of DM channel {channel.id}")
        payload.update(
            user=user.payload(),
            channel=channel.payload(),
            authorizing_integration_owners={"0": "0"},
            context=1,
        )
    if message is not None:
        payload["message"] = message.payload()
    record = InteractionRecord(
        id=int(payload["id"]),
        token=token,
        type=kind,
        user=user,
        channel=channel,
        payload=payload,
        created_at=time.monotonic(),
        source_message=message,
    )
    state.interactions[record.id] = record
    state.by_token[token] = record
    return record
