"""Admin use cases: grants, limits, bans, stats, pause, channels. Authority is checked here, on the server side.

Bot admins (the shell, ``LIKENESS_ADMINS``, or on Discord the admin role by id inside one of the operator's
home servers) may do everything. A Discord server's own managers (Manage Server there) may change only that
server's settings: its channels, and pausing or resuming it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from bot import messages
from bot.errors import UserError
from bot.service import report
from bot.service.actors import SHELL, Actor
from bot.service.safety import SafetyPolicies, policy_scope
from engine.safety import SafetySettings
from storage import audit, quota, scope_caps, scopes, stats, users, workers
from storage import report as money
from storage.db import Database
from storage.jobs import cancel_all_of_user
from storage.models import User
from storage.quota import utc_day
from storage.report import Report

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "discord")
ChannelChange = Literal["add", "remove", "clear", "list"]
T = TypeVar("T")


class AdminService:
    def __init__(
        self,
        db: Database,
        *,
        admins: list[str],
        admin_role: str | None,
        welcome_credits: int,
        admin_guilds: list[str] | tuple[str, ...] = (),
        worker_ttl_s: float = 30.0,
        safety: SafetySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.policies = SafetyPolicies(db, safety or SafetySettings())
        self.worker_ttl_s = worker_ttl_s  # a worker silent this long is not counted
        self.admins = frozenset(admins)
        self.admin_role = admin_role
        self.admin_guilds = frozenset(admin_guilds)
        self.welcome_credits = welcome_credits
        self.clock = clock

    def is_admin(self, actor: Actor) -> bool:
        """A bot admin: may act on every user and on the whole bot."""
        if actor.platform == SHELL or actor.key in self.admins:
            return True
        # Roles come from Discord with the interaction, not from the client. Any server owner can make a role
        # of any name, so only the role's id counts, and only in the operator's own servers.
        return bool(
            actor.platform == "discord"
            and self.admin_role
            and actor.guild_id in self.admin_guilds
            and self.admin_role in actor.roles
        )

    def manages_scope(self, actor: Actor) -> bool:
        """May change the settings of the actor's scope: a bot admin anywhere, a server's managers in it."""
        if self.is_admin(actor):
            return True
        return actor.platform == "discord" and actor.guild_id is not None and actor.manages_guild

    def require(self, actor: Actor) -> None:
        if not self.is_admin(actor):
            log.warning("refused admin command from %s", actor.key)
            raise UserError(messages.NOT_ADMIN)

    def require_scope(self, actor: Actor) -> None:
        if not self.manages_scope(actor):
            log.warning("refused a settings change of %s from %s", actor.scope, actor.key)
            raise UserError(messages.NOT_ADMIN if actor.guild_id is None else messages.NOT_SERVER_MANAGER)

    def parse_user(self, actor: Actor, ref: str) -> tuple[str, str]:
        platform, sep, user_id = ref.partition(":")
        if not sep:
            platform, user_id = actor.platform, ref
        user_id = user_id.strip().lstrip("@")
        if platform not in PLATFORMS or not user_id.isdigit():
            raise UserError(messages.BAD_USER_REF)
        return platform, user_id

    async def _user(self, actor: Actor, ref: str) -> User:
        platform, user_id = self.parse_user(actor, ref)
        return await self.db.write(
            users.ensure_user,
            platform=platform,
            platform_user_id=user_id,
            now=self.clock(),
            welcome_credits=self.welcome_credits,
        )

    @staticmethod
    def _int(what: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise UserError(messages.BAD_NUMBER.format(what=what, value=value)) from None

    async def _audited(self, actor: Actor, action: str, target: str, change: Callable[..., T], **detail: Any) -> T:
        """Apply a change and its audit entry in one transaction."""
        now = self.clock()

        def apply(session: Any) -> T:
            result = change(session)
            audit.record(session=session, actor=actor.key, action=action, target=target, now=now, detail=detail)
            return result

        log.info("admin %s by %s on %s", action, actor.key, target)
        return await self.db.write(apply)

    async def grant(self, actor: Actor, ref: str, amount_text: str) -> str:
        self.require(actor)
        amount = self._int("Credits", amount_text)
        user = await self._user(actor, ref)
        target = f"{user.platform}:{user.platform_user_id}"
        try:
            change, balance = await self._audited(
                actor,
                "grant",
                target,
                lambda session: quota.grant(
                    session=session, user_id=user.id or 0, amount=amount, actor=actor.key, now=self.clock()
                ),
                amount=amount,
            )
        except quota.TakeAwayRefused as refused:
            raise UserError(messages.take_away_refused(target, refused.available)) from None
        return messages.granted(target, change, balance)

    async def limit(self, actor: Actor, ref: str, jobs_text: str) -> str:
        self.require(actor)
        jobs = self._int("Jobs per day", jobs_text)
        if jobs < 0:
            raise UserError(messages.BAD_NUMBER.format(what="Jobs per day", value=jobs_text))
        if ref == "default":
            await self._audited(
                actor,
                "limit",
                "default",
                lambda session: scopes.update_scope(
                    session=session, scope=scopes.GLOBAL_SCOPE, now=self.clock(), daily_jobs=jobs
                ),
                jobs=jobs,
            )
            return messages.limit_set("default", jobs)
        user = await self._user(actor, ref)
        target = f"{user.platform}:{user.platform_user_id}"
        await self._audited(
            actor,
            "limit",
            target,
            lambda session: users.set_user_fields(session=session, user_id=user.id or 0, daily_jobs_limit=jobs),
            jobs=jobs,
        )
        return messages.limit_set(target, jobs)

    async def ban(self, actor: Actor, ref: str, reason: str = "", *, banned: bool = True) -> str:
        self.require(actor)
        user = await self._user(actor, ref)
        target = f"{user.platform}:{user.platform_user_id}"

        def change(session: Any) -> None:
            users.set_user_fields(session=session, user_id=user.id or 0, banned=banned, ban_reason=reason[:256])
            if banned:  # jobs already queued would still run and charge: they end with the ban, refunded
                cancel_all_of_user(session=session, user_id=user.id or 0, now=self.clock())

        await self._audited(actor, "ban" if banned else "unban", target, change, reason=reason)
        return messages.banned(target) if banned else messages.unbanned(target)

    async def stats(self, actor: Actor) -> str:
        self.require(actor)
        now = self.clock()
        collected = await self.db.read(stats.collect, since=_day_start(now))
        live = await self.db.read(workers.live, now=now, ttl_s=self.worker_ttl_s)
        today = report.as_table(await self.report(actor, days=1))
        return "\n".join([messages.stats_text(collected), messages.workers_text(live, now), "Today by backend:", today])

    async def report(self, actor: Actor, *, days: int = 7) -> Report:
        """Per UTC day and backend, the last ``days`` days (today included): jobs, spend, charges, sales."""
        self.require(actor)
        if days < 1:
            raise UserError(messages.BAD_NUMBER.format(what="Days", value=str(days)))
        end = _day_start(self.clock()) + 86_400
        return await self.db.read(money.collect, start=end - days * 86_400, end=end)

    async def pause(self, actor: Actor, reason: str = "", *, paused: bool = True) -> str:
        """Pause or resume new jobs in the actor's scope (a guild, or everywhere)."""
        self.require_scope(actor)
        scope = actor.scope
        await self._audited(
            actor,
            "pause" if paused else "resume",
            scope,
            lambda session: scopes.update_scope(
                session=session, scope=scope, now=self.clock(), paused=paused, pause_reason=reason[:256]
            ),
            reason=reason,
        )
        return messages.paused(reason) if paused else messages.RESUMED

    async def safety(self, actor: Actor, policy: str = "") -> str:
        """Show, set or clear ("default") the safety policy where the actor is: their Discord server (its
        managers may), their Telegram group, or everywhere (a private chat, the shell)."""
        scope = policy_scope(actor)
        if actor.guild_id is not None:
            self.require_scope(actor)
        else:
            self.require(actor)
        where = "everywhere" if scope == scopes.GLOBAL_SCOPE else "in this server" if actor.guild_id else "in this chat"
        policy = policy.strip().lower()
        if policy:
            if policy not in (*messages.SAFETY_POLICIES, "default"):
                raise UserError(messages.BAD_SAFETY_POLICY)
            value = "" if policy == "default" else policy
            await self._audited(
                actor,
                "safety",
                scope,
                lambda session: scopes.update_scope(
                    session=session, scope=scope, now=self.clock(), safety_policy=value
                ),
                policy=policy,
            )
        current, own = await self.policies.in_force(scope)
        return messages.safety_policy(where, str(current), own)

    async def images(self, actor: Actor, cap: str = "") -> str:
        """Show or set ("off": none) how many images members may render per UTC day in the actor's Discord
        server or Telegram group, whatever their credits; the scope's own admins may."""
        scope = policy_scope(actor)
        if scope == scopes.GLOBAL_SCOPE:
            self.require(actor)
            raise UserError(messages.IMAGE_CAP_WHERE)
        # A Telegram group's administrators (as Telegram says, asked by the front end) manage its cap.
        if not (actor.platform == "telegram" and actor.manages_guild):
            self.require_scope(actor)
        where = "in this server" if actor.guild_id else "in this chat"
        cap = cap.strip().lower()
        if cap:
            value = None if cap == "off" else self._int("Images per day", cap)
            if value is not None and value < 0:
                raise UserError(messages.BAD_NUMBER.format(what="Images per day", value=cap))
            await self._audited(
                actor,
                "images",
                scope,
                lambda session: scope_caps.set_cap(session=session, scope=scope, images=value, now=self.clock()),
                images=value,
            )
        now = self.clock()
        found = await self.db.read(scope_caps.cap_of, scope=scope)
        used = await self.db.read(scope_caps.used_today, scope=scope, now=now)
        return messages.image_cap(where, found, used)

    async def channels(self, actor: Actor, change: ChannelChange, channel_id: str) -> tuple[str, ...]:
        """Change or list the channels a guild's members may use the bot in (none listed: every channel);
        returns the channel ids listed now."""
        if actor.guild_id is None:
            self.require(actor)
            raise UserError(messages.DISCORD_SERVER_ONLY)
        self.require_scope(actor)
        scope = actor.scope
        if change == "list":
            return (await self.db.read(scopes.get_scope, scope=scope)).channels
        now = self.clock()

        def apply(session: Any) -> tuple[str, ...]:
            channels = scopes.get_scope(session=session, scope=scope).channels
            if change == "add":
                channels = (*channels, channel_id) if channel_id not in channels else channels
            elif change == "remove":
                channels = tuple(c for c in channels if c != channel_id)
            else:
                channels = ()
            scopes.update_scope(session=session, scope=scope, now=now, channels=channels)
            audit.record(
                session=session,
                actor=actor.key,
                action=f"channels-{change}",
                target=scope,
                now=now,
                detail={"channels": list(channels)},
            )
            return channels

        channels = await self.db.write(apply)
        log.info("admin channels-%s by %s on %s", change, actor.key, scope)
        return channels


def _day_start(now: float) -> float:
    day = dt.datetime.strptime(utc_day(now), "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return day.timestamp()
