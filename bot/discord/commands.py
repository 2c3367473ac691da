"""The slash commands as Discord shows them, declared once; each one hands its options to the front end."""

# No `from __future__ import annotations` here: discord.py reads option types and ranges from the
# annotations, and the ranges are values computed from the backend catalogue when this module loads.

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot import messages
from bot.discord.client import LikenessClient, frontend_of
from bot.i18n import LANGUAGES
from bot.service.actors import Actor
from bot.service.admin import ChannelChange
from bot.service.language import AUTO
from bot.service.options import MODES
from bot.service.replies import Reply
from engine.capabilities import Capabilities, Range
from engine.catalogue import CAPABILITIES

ASPECTS = ("1:1", "3:4", "4:3", "2:3", "3:2", "9:16", "16:9")
MAX_DISCORD_INTEGER = 2**53  # Discord's bound for integer and number options
MAX_JOBS_PER_DAY = 100_000
Interaction = discord.Interaction[LikenessClient]
DESCRIBE = messages.DISCORD_DESCRIPTIONS


@dataclass(frozen=True)
class OptionRanges:
    """What the /imagine number options accept: the union of every backend's documented range.

    A value inside the union may still be outside the chosen backend's range; the service checks that
    and says what is allowed.
    """

    steps: tuple[int, int]
    id_weight: tuple[float, float]
    guidance: tuple[float, float]
    images: tuple[int, int]
    seed: tuple[int, int]

    @classmethod
    def of(cls, capabilities: Iterable[Capabilities]) -> "OptionRanges":
        found = list(capabilities)

        def union(name: str) -> tuple[float, float] | None:
            ranges = [c.limits[name] for c in found if isinstance(c.limits.get(name), Range)]
            if not ranges:
                return None
            return min(r.low for r in ranges), max(r.high for r in ranges)  # type: ignore[union-attr]

        def whole(name: str, fallback: tuple[int, int]) -> tuple[int, int]:
            bounds = union(name)
            if bounds is None:
                return fallback
            return max(int(bounds[0]), -MAX_DISCORD_INTEGER), min(int(bounds[1]), MAX_DISCORD_INTEGER)

        def real(name: str) -> tuple[float, float]:
            bounds = union(name)
            return (float(bounds[0]), float(bounds[1])) if bounds else (0.0, float(MAX_DISCORD_INTEGER))

        return cls(
            steps=whole("steps", (1, MAX_DISCORD_INTEGER)),
            id_weight=real("id_weight"),
            guidance=real("guidance"),
            images=whole("num_images", (1, 1)),
            seed=whole("seed", (0, MAX_DISCORD_INTEGER)),
        )


# Every backend's documented ranges, configured here or not: what `likeness discord sync` registers.
RANGES = OptionRanges.of(CAPABILITIES.values())


def _described(path: str) -> dict[str, str]:
    """The option descriptions of the command at ``path``, for app_commands.describe."""
    prefix = path + "."
    return {
        key[len(prefix) :]: text
        for key, text in DESCRIBE.items()
        if key.startswith(prefix) and "." not in key[len(prefix) :]
    }


def _user_ref(text: str) -> str:
    """A user as the service names them: a pasted mention <@123> becomes the bare id."""
    mention = re.fullmatch(r"<@!?(\d+)>", text.strip())
    return mention.group(1) if mention else text.strip()


async def _face_names(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    return await frontend_of(interaction).face_choices(interaction, current)


async def _style_names(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    names = frontend_of(interaction).service.styles.names(current)
    return [app_commands.Choice(name=name, value=name) for name in names][:25]


# --- rendering -------------------------------------------------------------------------------------


@app_commands.command(name="imagine", description=DESCRIBE["imagine"])
@app_commands.describe(**_described("imagine"))
@app_commands.choices(
    aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS],
    mode=[app_commands.Choice(name=m, value=m) for m in sorted(set(MODES.values()))],
)
@app_commands.autocomplete(face=_face_names, style=_style_names)
async def imagine(
    interaction: Interaction,
    prompt: app_commands.Range[str, 1, messages.MAX_PROMPT],
    photo: discord.Attachment | None = None,
    face: str | None = None,
    aspect: str | None = None,
    seed: app_commands.Range[int, RANGES.seed[0], RANGES.seed[1]] | None = None,
    steps: app_commands.Range[int, RANGES.steps[0], RANGES.steps[1]] | None = None,
    id_weight: app_commands.Range[float, RANGES.id_weight[0], RANGES.id_weight[1]] | None = None,
    guidance: app_commands.Range[float, RANGES.guidance[0], RANGES.guidance[1]] | None = None,
    images: app_commands.Range[int, RANGES.images[0], RANGES.images[1]] | None = None,
    negative: str | None = None,
    style: str | None = None,
    strict: bool | None = None,
    mode: str | None = None,
) -> None:
    params = {
        "seed": seed,
        "steps": steps,
        "id_weight": id_weight,
        "guidance": guidance,
        "num_images": images,
        "negative_prompt": negative,
        "style": style,
        "strict": strict or None,
        "mode": mode,
    }
    await frontend_of(interaction).imagine(interaction, prompt, photo, face, aspect, params)


@app_commands.command(name="cancel", description=DESCRIBE["cancel"])
async def cancel(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, lambda actor: frontend.service.imagine.cancel(actor))


# --- saved faces ------------------------------------------------------------------------------------

face = app_commands.Group(name="face", description=DESCRIBE["face"])


@face.command(name="save", description=DESCRIBE["face.save"])
@app_commands.describe(**_described("face.save"))
async def face_save(
    interaction: Interaction,
    name: app_commands.Range[str, 1, 32],
    photo: discord.Attachment,
    photo2: discord.Attachment | None = None,
    photo3: discord.Attachment | None = None,
    photo4: discord.Attachment | None = None,
) -> None:
    frontend = frontend_of(interaction)
    attachments = [a for a in (photo, photo2, photo3, photo4) if a is not None]
    frontend.check_photos(attachments)

    async def save(actor: Actor) -> Reply:
        photos = tuple([await a.read() for a in attachments])
        return await frontend.service.faces.save(actor, name, photos)

    await frontend.answer(interaction, save)


@face.command(name="list", description=DESCRIBE["face.list"])
async def face_list(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, frontend.service.faces.show)


@face.command(name="use", description=DESCRIBE["face.use"])
@app_commands.describe(**_described("face.use"))
@app_commands.autocomplete(name=_face_names)
async def face_use(interaction: Interaction, name: str) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, lambda actor: frontend.service.faces.use(actor, name))


@face.command(name="delete", description=DESCRIBE["face.delete"])
@app_commands.describe(**_described("face.delete"))
@app_commands.autocomplete(name=_face_names)
async def face_delete(interaction: Interaction, name: str) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, lambda actor: frontend.service.faces.delete(actor, name))


@face.command(name="delete-all", description=DESCRIBE["face.delete-all"])
async def face_delete_all(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, lambda actor: frontend.service.faces.delete(actor, None))


# --- the user's account -------------------------------------------------------------------------------


@app_commands.command(name="history", description=DESCRIBE["history"])
async def history(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, frontend.service.account.history)


@app_commands.command(name="quota", description=DESCRIBE["quota"])
async def quota(interaction: Interaction) -> None:
    await frontend_of(interaction).quota(interaction)


@app_commands.command(name="buy", description=DESCRIBE["buy"])
async def buy(interaction: Interaction) -> None:
    await frontend_of(interaction).buy(interaction)


@app_commands.command(name="forget", description=DESCRIBE["forget"])
async def forget(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_now(interaction, frontend.service.account.forget(frontend.actor(interaction)))


@app_commands.command(name="privacy", description=DESCRIBE["privacy"])
async def privacy(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer(interaction, frontend.service.account.privacy)


@app_commands.command(name="language", description=DESCRIBE["language"])
@app_commands.describe(**_described("language"))
@app_commands.choices(
    language=[
        *(app_commands.Choice(name=name, value=code) for code, name in LANGUAGES.items()),
        app_commands.Choice(name=messages.LANGUAGE_AUTO, value=AUTO),
    ]
)
async def language(interaction: Interaction, language: str | None = None) -> None:
    frontend = frontend_of(interaction)
    languages = frontend.service.languages
    await frontend.answer(
        interaction, lambda actor: languages.choose(actor, language) if language else languages.show(actor)
    )


@app_commands.command(name="styles", description=DESCRIBE["styles"])
async def styles(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_now(interaction, frontend.service.styles.listing())


@app_commands.command(name="help", description=DESCRIBE["help"])
async def help_(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_now(interaction, frontend.service.account.help())


# --- administration -----------------------------------------------------------------------------------

# Discord hides these from members without Manage Server unless a server overrides it; the service checks
# authority again on every call: a server's managers may change that server's settings only.
admin = app_commands.Group(
    name="admin",
    description=DESCRIBE["admin"],
    default_permissions=discord.Permissions(manage_guild=True),
    guild_only=True,
    allowed_contexts=app_commands.AppCommandContext(guild=True),
)


@admin.command(name="grant", description=DESCRIBE["admin.grant"])
@app_commands.describe(**_described("admin.grant"))
async def admin_grant(interaction: Interaction, user: str, credits: int) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(
        interaction, lambda actor: frontend.service.admin.grant(actor, _user_ref(user), str(credits))
    )


@admin.command(name="limit", description=DESCRIBE["admin.limit"])
@app_commands.describe(**_described("admin.limit"))
async def admin_limit(interaction: Interaction, user: str, jobs: app_commands.Range[int, 0, MAX_JOBS_PER_DAY]) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(
        interaction, lambda actor: frontend.service.admin.limit(actor, _user_ref(user), str(jobs))
    )


@admin.command(name="ban", description=DESCRIBE["admin.ban"])
@app_commands.describe(**_described("admin.ban"))
async def admin_ban(interaction: Interaction, user: str, reason: str | None = None) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(
        interaction, lambda actor: frontend.service.admin.ban(actor, _user_ref(user), reason or "")
    )


@admin.command(name="unban", description=DESCRIBE["admin.unban"])
@app_commands.describe(**_described("admin.unban"))
async def admin_unban(interaction: Interaction, user: str) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(
        interaction, lambda actor: frontend.service.admin.ban(actor, _user_ref(user), banned=False)
    )


@admin.command(name="stats", description=DESCRIBE["admin.stats"])
async def admin_stats(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(interaction, frontend.service.admin.stats)


@admin.command(name="pause", description=DESCRIBE["admin.pause"])
@app_commands.describe(**_described("admin.pause"))
async def admin_pause(interaction: Interaction, reason: str | None = None) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(interaction, lambda actor: frontend.service.admin.pause(actor, reason or ""))


@admin.command(name="resume", description=DESCRIBE["admin.resume"])
async def admin_resume(interaction: Interaction) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(interaction, lambda actor: frontend.service.admin.pause(actor, paused=False))


@admin.command(name="safety", description=DESCRIBE["admin.safety"])
@app_commands.describe(**_described("admin.safety"))
@app_commands.choices(
    policy=[app_commands.Choice(name=p, value=p) for p in (*messages.SAFETY_POLICIES, "default")],
)
async def admin_safety(interaction: Interaction, policy: str | None = None) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(interaction, lambda actor: frontend.service.admin.safety(actor, policy or ""))


@admin.command(name="images", description=DESCRIBE["admin.images"])
@app_commands.describe(**_described("admin.images"))
async def admin_images(interaction: Interaction, cap: str | None = None) -> None:
    frontend = frontend_of(interaction)
    await frontend.answer_admin(interaction, lambda actor: frontend.service.admin.images(actor, cap or ""))


channels = app_commands.Group(name="channels", description=DESCRIBE["admin.channels"], parent=admin)


async def _change_channels(
    interaction: Interaction, change: ChannelChange, channel: discord.TextChannel | None
) -> None:
    frontend = frontend_of(interaction)
    chosen = str(channel.id if channel is not None else interaction.channel_id)
    await frontend.answer_admin(interaction, lambda actor: frontend.change_channels(actor, change, chosen))


@channels.command(name="add", description=DESCRIBE["admin.channels.add"])
@app_commands.describe(**_described("admin.channels.add"))
async def channels_add(interaction: Interaction, channel: discord.TextChannel | None = None) -> None:
    await _change_channels(interaction, "add", channel)


@channels.command(name="remove", description=DESCRIBE["admin.channels.remove"])
@app_commands.describe(**_described("admin.channels.remove"))
async def channels_remove(interaction: Interaction, channel: discord.TextChannel | None = None) -> None:
    await _change_channels(interaction, "remove", channel)


@channels.command(name="clear", description=DESCRIBE["admin.channels.clear"])
async def channels_clear(interaction: Interaction) -> None:
    await _change_channels(interaction, "clear", None)


@channels.command(name="list", description=DESCRIBE["admin.channels.list"])
async def channels_list(interaction: Interaction) -> None:
    await _change_channels(interaction, "list", None)


COMMANDS: tuple[app_commands.Command[Any, ..., None] | app_commands.Group, ...] = (
    imagine,
    face,
    history,
    quota,
    buy,
    cancel,
    forget,
    privacy,
    language,
    styles,
    help_,
    admin,
)


def add_commands(tree: app_commands.CommandTree[Any]) -> None:
    """Register every command on ``tree`` (the running client's, or a throwaway one for syncing)."""
    for command in COMMANDS:
        tree.add_command(command)
