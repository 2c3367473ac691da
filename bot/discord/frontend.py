"""Discord: translates interactions into service calls and renders neutral replies. No logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot import i18n, messages
from bot.discord import uploads
from bot.discord.client import LikenessClient
from bot.discord.commands import add_commands
from bot.discord.endpoints import configured_endpoints
from bot.discord.target import PLATFORM, DiscordTarget
from bot.discord.views import ActionButton, MenuSelect, view_for
from bot.errors import OperatorError, UserError
from bot.frontend import DeliveryDeferred, DeliveryParts, Undeliverable
from bot.intake import MAX_BYTES
from bot.service.actors import Actor
from bot.service.admin import ChannelChange
from bot.service.imagine import ImagineInput
from bot.service.replies import Action, Reply, ReplyImage
from bot.service.use_cases import LikenessService
from bot.settings import DiscordSettings
from engine.request import size_for_aspect

log = logging.getLogger(__name__)

GUILD_READY_TIMEOUT_S = 2.0  # how long the client waits for more guilds after the last one arrived
START_TIMEOUT_S = 60.0
TOKEN_MARGIN_S = 60.0  # an interaction token this close to its 15 minutes is not used any more
MAX_FILES = 10  # attachments per Discord message
TOKEN_GONE = {10008, 10015, 10062, 50027}  # unknown message / webhook / interaction, invalid webhook token
NEVER_DELIVERABLE = {50007, 10003, 10013}  # cannot send messages to this user, unknown channel, unknown user
NSFW_CAPABLE = (discord.TextChannel, discord.VoiceChannel, discord.StageChannel, discord.ForumChannel, discord.Thread)
AnyInteraction = discord.Interaction[Any]


class DiscordStartError(OperatorError):
    """The Discord client could not log in or connect to the gateway (the message is for the operator)."""


class DiscordFrontEnd:
    platform = PLATFORM

    def __init__(self, settings: DiscordSettings, service: LikenessService) -> None:
        assert settings.token is not None
        self.settings = settings
        self.service = service
        self.client = LikenessClient(
            self, dynamic_items=(ActionButton, MenuSelect), guild_ready_timeout=GUILD_READY_TIMEOUT_S
        )
        add_commands(self.client.tree)
        self.client.tree.error(self._tree_error)
        self._gateway: asyncio.Task[None] | None = None
        self._endpoints = contextlib.ExitStack()

    # --- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        assert self.settings.token is not None
        self._endpoints.enter_context(configured_endpoints(self.settings.api_base, self.settings.gateway_url))
        try:
            await self.client.login(self.settings.token.get_secret_value())
        except discord.LoginFailure:
            await self.stop()
            raise DiscordStartError("Discord rejected the bot token (LIKENESS_DISCORD__TOKEN)") from None
        except (discord.HTTPException, OSError) as exc:
            await self.stop()
            raise DiscordStartError(f"cannot reach the Discord API at {self.settings.api_base}: {exc}") from None
        self._gateway = asyncio.create_task(self.client.connect(), name="discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {self._gateway, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            self._gateway.add_done_callback(_log_gateway_end)
            return
        ready.cancel()
        failure = self._gateway.exception() if self._gateway in done else None
        await self.stop()
        raise DiscordStartError(f"Discord gateway not ready: {failure or 'timed out'}") from failure

    async def stop(self) -> None:
        await self.client.close()
        if self._gateway is not None:
            with contextlib.suppress(Exception):
                await self._gateway
            self._gateway = None
        self._endpoints.close()

    # --- events into service calls ----------------------------------------------------------------

    @staticmethod
    def actor(interaction: AnyInteraction) -> Actor:
        user = interaction.user
        member = isinstance(user, discord.Member) and interaction.guild_id is not None
        # Role ids and permissions as Discord computed them for this member in this server.
        roles = tuple(str(r.id) for r in user.roles if not r.is_default()) if isinstance(user, discord.Member) else ()
        return Actor(
            PLATFORM,
            str(user.id),
            user.display_name,
            chat_id=str(interaction.channel_id) if interaction.channel_id else None,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            roles=roles,
            manages_guild=member and interaction.permissions.manage_guild,
            locale=interaction.locale.value,
        )

    async def use_language(self, interaction: AnyInteraction) -> None:
        """Answer this interaction in its user's language: their /language choice, else their client's."""
        i18n.use(await self.service.users.language(self.actor(interaction)))

    @staticmethod
    def reply_target(interaction: AnyInteraction, status: int | None) -> DiscordTarget:
        """Everything any process needs later to answer: the token while it lasts, then channel or DM."""
        channel = interaction.channel
        assert interaction.channel_id is not None
        return DiscordTarget(
            application_id=interaction.application_id,
            token=interaction.token,
            token_expires=interaction.expires_at.timestamp(),
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            status_message_id=status,
            nsfw=isinstance(channel, NSFW_CAPABLE) and channel.is_nsfw(),
            size_limit=interaction.filesize_limit,
        )

    def parse_target(self, data: Mapping[str, Any]) -> DiscordTarget:
        return DiscordTarget.from_json(data)

    @staticmethod
    def check_photos(attachments: Sequence[discord.Attachment]) -> None:
        """Refuse what is plainly not a usable photo before anything is downloaded or charged."""
        for attachment in attachments:
            if attachment.size > MAX_BYTES:
                raise UserError(messages.PHOTO_TOO_LARGE.format(mb=MAX_BYTES // (1024 * 1024)))
            content_type = (attachment.content_type or "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith("image/"):
                raise UserError(messages.PHOTO_NOT_IMAGE)

    async def answer(self, interaction: AnyInteraction, use_case: Callable[[Actor], Awaitable[Reply]]) -> None:
        """Acknowledge at once (Discord allows 3 s), run the use case, show its reply privately."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await use_case(self.actor(interaction))
        await self._edit_original(interaction, reply)

    async def answer_admin(self, interaction: AnyInteraction, use_case: Callable[[Actor], Awaitable[str]]) -> None:
        async def as_reply(actor: Actor) -> Reply:
            return Reply(await use_case(actor))

        await self.answer(interaction, as_reply)

    @staticmethod
    async def answer_now(interaction: AnyInteraction, reply: Reply) -> None:
        """A reply that needs no I/O, sent as the interaction's response."""
        view = view_for(reply.buttons, reply.menu)
        if view is None:
            await interaction.response.send_message(reply.text, ephemeral=True)
        else:
            await interaction.response.send_message(reply.text, view=view, ephemeral=True)

    async def imagine(
        self,
        interaction: AnyInteraction,
        prompt: str,
        photo: discord.Attachment | None,
        face: str | None,
        aspect: str | None,
        params: dict[str, Any],
    ) -> None:
        if photo is not None:
            self.check_photos([photo])
        if aspect:
            size = size_for_aspect(aspect)
            if size is None:
                raise UserError(messages.BAD_ASPECT.format(value=aspect))
            params = {**params, "width": size[0], "height": size[1]}
        status = await self._acknowledge(interaction)
        photos = (await photo.read(),) if photo is not None else ()
        given = ImagineInput(
            event_id=f"dc:{interaction.id}",
            text=prompt,
            photos=photos,
            face=face,
            params=params,
            reply_target=self.reply_target(interaction, status),
        )
        submitted = await self.service.imagine.submit(self.actor(interaction), given)
        await self._show_status(interaction, submitted.reply)

    async def _acknowledge(self, interaction: AnyInteraction) -> int | None:
        """Answer with a private status message at once; returns its id for later progress edits.

        A message rather than a deferral: a result follow-up sent while a deferral is still "thinking"
        would replace that private message instead of being posted for everyone.
        """
        response = await interaction.response.send_message(messages.DISCORD_WORKING, ephemeral=True)
        message_id = response.message_id if response is not None else None
        return int(message_id) if message_id else None

    async def _show_status(self, interaction: AnyInteraction, reply: Reply) -> None:
        # Already finished and delivered when this comes: the status message is gone.
        with contextlib.suppress(discord.NotFound):
            await self._edit_original(interaction, reply)

    async def face_choices(self, interaction: AnyInteraction, current: str) -> list[app_commands.Choice[str]]:
        names = await self.service.faces.names(self.actor(interaction))
        typed = current.strip().lower()
        return [app_commands.Choice(name=name, value=name) for name in names if name.startswith(typed)][:25]

    # --- selling credits (SKUs, entitlements) ------------------------------------------------------

    async def buy(self, interaction: AnyInteraction) -> None:
        """The store's buttons for the packs on sale (Discord's premium buttons), or how else to get credits."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        credited = await self.claim_entitlements(interaction)
        store = self.service.shop.store()
        text = "\n".join([*credited, store.text])
        if not store.skus:
            await interaction.edit_original_response(content=text)
            return
        view: discord.ui.View = discord.ui.View(timeout=None)
        for sku in store.skus:
            view.add_item(discord.ui.Button(sku_id=int(sku)))
        await interaction.edit_original_response(content=text, view=view)

    async def quota(self, interaction: AnyInteraction) -> None:
        """/quota, after crediting any purchase the interaction shows not credited yet."""

        async def show(actor: Actor) -> Reply:
            await self.claim_entitlements(interaction)
            return await self.service.account.quota(actor)

        await self.answer(interaction, show)

    async def claim_entitlements(self, interaction: AnyInteraction) -> list[str]:
        """Credit the user's unconsumed purchases the interaction carries (an event may have been missed)."""
        thanks = []
        for entitlement in interaction.entitlements:
            if entitlement.consumed or entitlement.user_id != interaction.user.id:
                continue
            text = await self.entitled(entitlement, tell=False)
            if text:
                thanks.append(text)
        return thanks

    async def entitled(self, entitlement: discord.Entitlement, *, tell: bool = True) -> str | None:
        """Credit a purchase once, then consume it; returns the thanks for a new credit."""
        if entitlement.user_id is None:
            return None  # a server's entitlement: packs are bought by users
        actor = Actor(PLATFORM, str(entitlement.user_id))
        credited = await self.service.shop.entitled(
            actor, entitlement_id=str(entitlement.id), sku_id=str(entitlement.sku_id)
        )
        if credited is None:
            return None  # not a pack of ours
        if not entitlement.consumed:
            try:
                await entitlement.consume()
            except discord.HTTPException as exc:  # credited already: the next check consumes it
                log.warning("could not consume entitlement %s: %s", entitlement.id, exc)
        if not credited.new:
            return None
        text = messages.purchased(credited.purchase.credits, credited.balance)
        if tell:
            with contextlib.suppress(discord.HTTPException):
                await self.notify(str(entitlement.user_id), text)
        return text

    async def notify(self, user_id: str, text: str) -> None:
        """Write to a user by DM."""
        dm = await self.client.create_dm(discord.Object(int(user_id)))
        await dm.send(text)

    async def change_channels(self, actor: Actor, change: ChannelChange, channel_id: str) -> str:
        """Change the channels a guild's members may use the bot in, and say which they are now."""
        channels = await self.service.admin.channels(actor, change, channel_id)
        return messages.discord_channels([f"<#{c}>" for c in channels]) if channels else messages.DISCORD_ALL_CHANNELS

    async def on_button(self, interaction: AnyInteraction, action: Action, argument: str) -> None:
        try:
            await self.use_language(interaction)
            await self._button(interaction, action, argument)
        except Exception as error:
            await self.report_error(interaction, error)

    async def _button(self, interaction: AnyInteraction, action: Action, argument: str) -> None:
        actor = self.actor(interaction)
        if action in (Action.REROLL, Action.VARY, Action.RERUN):
            status = await self._acknowledge(interaction)
            target = self.reply_target(interaction, status)
            submitted = await self.service.imagine.rerun(actor, f"dc:{interaction.id}", action, argument, target)
            await self._show_status(interaction, submitted.reply)
            return
        if action is Action.OPEN:  # the history menu's choice: the job shown again, privately
            await interaction.response.defer(ephemeral=True, thinking=True)
            reply = await self.service.account.open(actor, argument)
            files = [_file(image, spoiler=image.nsfw) for image in reply.images[:MAX_FILES]]
            view = view_for(reply.buttons)
            if view is None:
                await interaction.followup.send(reply.text, files=files, ephemeral=True)
            else:
                await interaction.followup.send(reply.text, files=files, view=view, ephemeral=True)
            return
        # The rest change the message that holds the button.
        await interaction.response.defer()
        if action is Action.LANGUAGE:
            reply = await self.service.languages.choose(actor, argument)
            await interaction.edit_original_response(content=reply.text, view=None)
            return
        if action is Action.CONFIRM:
            # The message asking becomes the job's status message.
            held = interaction.message.id if interaction.message is not None else None
            submitted = await self.service.imagine.confirm(actor, argument, self.reply_target(interaction, held))
            await self._edit_original(interaction, submitted.reply)
            return
        if action is Action.DECLINE:
            reply = await self.service.imagine.decline(actor, argument)
            await interaction.edit_original_response(content=reply.text, view=None)
            return
        if action is Action.CANCEL:
            reply = await self.service.imagine.cancel(actor, argument)
            await interaction.edit_original_response(content=reply.text, view=None)
        elif action is Action.HISTORY:
            page = int(argument) if argument.isdecimal() and len(argument) <= 6 else 0  # else forged: page one
            reply = await self.service.account.history(actor, page)
            await self._edit_original(interaction, reply)
        elif action is Action.FORGET:
            reply = await self.service.account.forget_confirmed(actor, argument == "yes")
            await interaction.edit_original_response(content=reply.text, view=None)
        elif action is Action.PRIVACY:
            reply = await self.service.account.accept_privacy(actor)
            await interaction.edit_original_response(content=reply.text, view=None)

    @staticmethod
    async def _edit_original(interaction: AnyInteraction, reply: Reply) -> None:
        await interaction.edit_original_response(content=reply.text, view=view_for(reply.buttons, reply.menu))

    # --- errors -----------------------------------------------------------------------------------

    async def _tree_error(self, interaction: AnyInteraction, error: app_commands.AppCommandError) -> None:
        await self.report_error(interaction, error)

    async def report_error(self, interaction: AnyInteraction, error: BaseException) -> None:
        """The one error handler: a UserError's message, or a generic apology; always private."""
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        view = None
        if isinstance(cause, UserError):
            text, view = cause.message, view_for(cause.buttons)
        else:
            log.error("interaction %s failed", interaction.id, exc_info=cause)
            text = messages.INTERNAL_ERROR
        if interaction.type is discord.InteractionType.autocomplete:
            return  # suggestions cannot carry a message; the user just sees none
        response = interaction.response
        try:
            if not response.is_done():
                if view is None:
                    await response.send_message(text, ephemeral=True)
                else:
                    await response.send_message(text, view=view, ephemeral=True)
            elif response.type in (
                discord.InteractionResponseType.deferred_message_update,
                discord.InteractionResponseType.message_update,
            ):
                if view is None:
                    await interaction.followup.send(text, ephemeral=True)
                else:
                    await interaction.followup.send(text, view=view, ephemeral=True)
            else:
                await interaction.edit_original_response(content=text, view=view)
        except discord.HTTPException:
            log.warning("could not tell the user about an error (interaction %s)", interaction.id, exc_info=True)

    # --- results and progress ---------------------------------------------------------------------

    async def deliver(
        self, job_id: str, target: DiscordTarget, reply: Reply, parts: DeliveryParts | None = None
    ) -> str:
        try:
            return await self._deliver_fitting(job_id, target, reply, parts or DeliveryParts())
        except discord.RateLimited as exc:  # a wait longer than the client would sit through
            raise DeliveryDeferred(f"discord rate limit: {exc}", retry_after_s=exc.retry_after) from None
        except discord.DiscordServerError as exc:
            raise DeliveryDeferred(f"discord unavailable ({exc.status})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryDeferred(f"discord unreachable: {exc!r}") from None

    async def _deliver(self, job_id: str, target: DiscordTarget, reply: Reply, parts: DeliveryParts) -> str:
        spoiler_nsfw = not target.nsfw
        if _token_usable(target):
            try:
                await self._send(self._webhook(target), reply, parts, spoiler_nsfw=spoiler_nsfw)
            except discord.HTTPException as exc:
                if exc.code not in TOKEN_GONE and exc.status != 401:
                    raise
                log.info("interaction token no longer valid (%s); posting in the channel", exc.code, extra=_job(job_id))
            else:
                await self._delete_status(target, job_id)
                return "interaction"
        channel = self.client.get_partial_messageable(target.channel_id)
        try:
            await self._send(channel, reply, parts, spoiler_nsfw=spoiler_nsfw, mention=str(target.user_id))
            return "channel"
        except (discord.Forbidden, discord.NotFound) as exc:
            log.info("cannot post in channel (%s); sending a DM", exc.code, extra=_job(job_id))
        try:
            dm = await self.client.create_dm(discord.Object(target.user_id))
            await self._send(dm, reply, parts, spoiler_nsfw=True)
        except (discord.Forbidden, discord.NotFound) as exc:
            if exc.code in NEVER_DELIVERABLE:
                raise Undeliverable(f"discord refused a DM to the user ({exc.code})") from None
            raise
        return "dm"

    async def _deliver_fitting(self, job_id: str, target: DiscordTarget, reply: Reply, parts: DeliveryParts) -> str:
        """Deliver with images that fit the upload limit: re-encoded smaller when over it (known ahead from
        the interaction, or learnt from a 413), and left out with a note when even that is too large."""
        limit = target.size_limit or uploads.DEFAULT_LIMIT
        if target.size_limit is not None:
            reply = await uploads.within(reply, limit) or uploads.without_images(reply)
        try:
            return await self._deliver(job_id, target, reply, parts)
        except discord.HTTPException as exc:
            if not reply.images or not uploads.too_large(exc):
                raise
        # Over a limit lower than the one known, or the files of a message counted together: each file gets
        # its share of the limit, or half its size if it was within that share already.
        largest = max(len(image.data) for image in reply.images)
        share = limit // min(len(reply.images), MAX_FILES)
        smaller = await uploads.within(reply, share if largest > share else largest // 2)
        log.info(
            "result over Discord's upload limit; sending it %s",
            "smaller" if smaller else "without images",
            extra=_job(job_id),
        )
        if smaller is not None:
            try:
                return await self._deliver(job_id, target, smaller, parts)
            except discord.HTTPException as exc:
                if not uploads.too_large(exc):
                    raise
        return await self._deliver(job_id, target, uploads.without_images(reply), parts)

    def _webhook(self, target: DiscordTarget) -> discord.Webhook:
        return discord.Webhook.partial(target.application_id, target.token, client=self.client)

    @staticmethod
    async def _send(
        destination: discord.Webhook | discord.abc.Messageable,
        reply: Reply,
        parts: DeliveryParts,
        *,
        spoiler_nsfw: bool,
        mention: str | None = None,
    ) -> None:
        """Post the reply, ten files per message, buttons on the last one; messages ``parts`` says were
        posted by an earlier try are not posted again."""
        text = messages.discord_for_user(mention, reply.text) if mention else reply.text
        mentions = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(int(mention))] if mention else False
        )
        chunks = [reply.images[i : i + MAX_FILES] for i in range(0, len(reply.images), MAX_FILES)] or [()]
        view = view_for(reply.buttons)

        async def post(index: int) -> None:
            chunk = chunks[index]
            kwargs: dict[str, Any] = {"allowed_mentions": mentions}
            if chunk:
                kwargs["files"] = [_file(image, spoiler=spoiler_nsfw and image.nsfw) for image in chunk]
            if index == len(chunks) - 1 and view is not None:
                kwargs["view"] = view
            content = text[:2000] if index == 0 else ""
            if isinstance(destination, discord.Webhook):
                await destination.send(content, wait=True, **kwargs)
            else:
                await destination.send(content or None, **kwargs)

        await parts.send([functools.partial(post, index) for index in range(len(chunks))])

    async def _delete_status(self, target: DiscordTarget, job_id: str) -> None:
        if target.status_message_id is None:
            return
        try:
            await self._webhook(target).delete_message(target.status_message_id)
        except discord.HTTPException:
            log.debug("status message already gone", extra={"job_id": job_id})

    async def show_progress(self, job_id: str, target: DiscordTarget, text: str) -> None:
        if target.status_message_id is None or not _token_usable(target):
            return  # the status message can only be edited through the interaction token
        try:
            await self._webhook(target).edit_message(target.status_message_id, content=text)
        except discord.NotFound:
            log.debug("status message gone", extra={"job_id": job_id})


def _token_usable(target: DiscordTarget) -> bool:
    return bool(target.token) and time.time() < target.token_expires - TOKEN_MARGIN_S


def _file(image: ReplyImage, *, spoiler: bool) -> discord.File:
    # spoiler=True names the file SPOILER_…, which Discord blurs until clicked.
    return discord.File(io.BytesIO(image.data), filename=image.filename, spoiler=spoiler)


def _job(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id}


def _log_gateway_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Discord gateway connection ended", exc_info=task.exception())
