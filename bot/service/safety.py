"""Which safety policy a job gets: its server's or group chat's own, the one set for everywhere, or the setting."""

from __future__ import annotations

from bot.service.actors import Actor
from bot.service.replies import ReplyTarget
from engine.safety import SafetyPolicy, SafetySettings
from storage import scopes
from storage.db import Database


def policy_scope(actor: Actor) -> str:
    """Where a policy set by this actor applies, and which policy their jobs get: a Discord server, a
    Telegram group, or everywhere (private chats, the shell)."""
    if actor.guild_id:
        return actor.scope
    if actor.platform == "telegram" and actor.chat_id and actor.chat_id != actor.user_id:
        return f"telegram:chat:{actor.chat_id}"
    return scopes.GLOBAL_SCOPE


class SafetyPolicies:
    def __init__(self, db: Database, settings: SafetySettings) -> None:
        self.db, self.settings = db, settings

    async def in_force(self, scope: str) -> tuple[SafetyPolicy, bool]:
        """The policy for ``scope`` and whether that scope set it itself."""
        for name in dict.fromkeys((scope, scopes.GLOBAL_SCOPE)):
            found = (await self.db.read(scopes.get_scope, scope=name)).safety_policy
            if found in set(SafetyPolicy):
                return SafetyPolicy(found), name == scope
        return self.settings.policy, False

    async def for_job(self, actor: Actor, target: ReplyTarget) -> SafetyPolicy:
        """The policy a new job carries; a Discord channel marked age-restricted allows, where the setting lets
        it."""
        policy, _own = await self.in_force(policy_scope(actor))
        if self.settings.nsfw_channels_allow and target.to_json().get("nsfw") is True:
            return SafetyPolicy.ALLOW
        return policy
