"""Selling credits: packs as Telegram Stars invoices or Discord SKUs, each payment credited once, refunds.

The front ends speak the platforms' payment protocols; this decides what is on sale, whether a checkout
may go ahead (within Telegram's ten seconds: a couple of reads, nothing else), and records each payment
exactly once by its charge id (``storage.purchases``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot import messages
from bot.errors import UserError
from bot.service.actors import Actor
from bot.service.admin import AdminService
from bot.service.replies import Reply
from bot.service.users import Users
from bot.settings import Pack, ShopSettings
from storage import audit, purchases, users
from storage.db import Database
from storage.models import Purchase
from storage.purchases import Credited, NewPurchase, RefundStep

log = logging.getLogger(__name__)

STARS = "XTR"  # Telegram Stars: invoices in it need no payment provider
SKU = "SKU"  # the currency recorded for a Discord purchase: Discord keeps the price
RECENT_PURCHASES = 3
CREDIT_RETRY_S = (1.0, 3.0, 10.0)  # waits before crediting a payment again after the database failed


@dataclass(frozen=True)
class Invoice:
    """One pack as a Telegram Stars invoice."""

    title: str
    description: str
    payload: str
    stars: int


@dataclass(frozen=True)
class Store:
    """What /buy shows on Discord: the consumable SKUs on sale, or (none) how else to get credits."""

    text: str
    skus: tuple[str, ...] = ()


Refunder = Callable[[str, str], Awaitable[None]]  # (the buyer's platform user id, charge id): returns the money


class RefundRefused(Exception):
    """The platform would not refund the charge; ``reason`` is its own words."""

    def __init__(self, reason: str, *, already: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.already = reason, already


class Shop:
    def __init__(
        self,
        db: Database,
        *,
        settings: ShopSettings,
        users: Users,
        admin: AdminService,
        per_image: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.settings, self.users, self.admin = db, settings, users, admin
        self.per_image, self.clock = per_image, clock

    # --- Telegram Stars -------------------------------------------------------------------------------

    def invoices(self) -> tuple[Invoice, ...]:
        return tuple(
            Invoice(
                messages.pack_title(pack.credits),
                messages.pack_description(pack.credits, self.per_image),
                pack.payload,
                pack.stars,
            )
            for pack in self.settings.packs
            if pack.stars is not None
        )

    def _star_pack(self, payload: str, currency: str, amount: int) -> Pack | None:
        for pack in self.settings.packs:
            if pack.stars is not None and pack.payload == payload and currency == STARS and amount == pack.stars:
                return pack
        return None

    async def pre_checkout(self, actor: Actor, payload: str, currency: str, amount: int) -> str | None:
        """Why this checkout must be declined, or None to let it go ahead. Reads only: Telegram cancels the
        payment unless it is answered within ten seconds."""
        if self._star_pack(payload, currency, amount) is None:
            log.info("declined a checkout for %r (%s %d): not on sale", payload, currency, amount)
            return messages.PACK_GONE
        user = await self.db.read(users.find_user, platform=actor.platform, platform_user_id=actor.user_id)
        if user is not None and user.banned:
            log.info("declined a checkout of banned user %s", actor.key)
            return messages.BUY_BANNED
        return None

    async def paid(
        self, actor: Actor, *, charge_id: str, provider_charge_id: str, payload: str, currency: str, amount: int
    ) -> Reply | None:
        """Credit a successful Stars payment once; None when this charge was credited before (Telegram sent
        the update again, or it came back after a restart)."""
        credits = _credits_of(payload)
        if credits is None:  # not an invoice of ours: the money arrived all the same, so the admins must look
            log.error("payment %s with an unknown payload %r: not credited", charge_id, payload[:64])
            return Reply(messages.PACK_GONE)
        # Telegram sends a successful payment once its update is confirmed, whatever the handler did: a
        # database that is briefly away is waited for, and a payment still not credited is named for the admins.
        for wait_s in (*CREDIT_RETRY_S, None):
            try:
                user = await self.users.of(actor)
                credited: Credited = await self.db.write(
                    purchases.credit,
                    purchase=NewPurchase(
                        platform=actor.platform,
                        charge_id=charge_id,
                        user_id=user.id or 0,
                        credits=credits,
                        price=amount,
                        currency=currency,
                        product=payload[:64],
                        provider_charge_id=provider_charge_id,
                    ),
                    now=self.clock(),
                )
                break
            except Exception:
                if wait_s is None:
                    log.error("payment %s of %s for %d credits NOT credited: grant them by hand", charge_id,
                              actor.key, credits, exc_info=True)  # fmt: skip
                    raise
                log.warning("crediting payment %s failed; trying again in %.0fs", charge_id, wait_s, exc_info=True)
                await asyncio.sleep(wait_s)
        if not credited.new:
            log.info("payment %s was credited before; not again", charge_id)
            return None
        log.info("user %s bought %d credits (%s %d, charge %s)", actor.key, credits, currency, amount, charge_id)
        return Reply(messages.purchased(credits, credited.balance))

    # --- Discord ----------------------------------------------------------------------------------

    def store(self) -> Store:
        skus = tuple(pack.discord_sku for pack in self.settings.packs if pack.discord_sku)
        return Store(messages.DISCORD_STORE, skus) if skus else Store(messages.NOTHING_FOR_SALE)

    def sku_pack(self, sku_id: str) -> Pack | None:
        return next((pack for pack in self.settings.packs if pack.discord_sku == sku_id), None)

    async def entitled(self, actor: Actor, *, entitlement_id: str, sku_id: str) -> Credited | None:
        """Credit an entitlement to one of our consumable SKUs once (the caller consumes it afterwards);
        None for a SKU that is no pack of ours."""
        pack = self.sku_pack(sku_id)
        if pack is None:
            return None
        user = await self.users.of(actor)
        credited: Credited = await self.db.write(
            purchases.credit,
            purchase=NewPurchase(
                platform=actor.platform,
                charge_id=entitlement_id,
                user_id=user.id or 0,
                credits=pack.credits,
                price=0,
                currency=SKU,
                product=sku_id,
            ),
            now=self.clock(),
        )
        if credited.new:
            log.info("user %s bought %d credits (SKU %s, entitlement %s)", actor.key, pack.credits, sku_id,
                     entitlement_id)  # fmt: skip
        return credited

    # --- both -------------------------------------------------------------------------------------

    def no_shop(self) -> Reply:
        return Reply(messages.NOTHING_FOR_SALE)

    def terms(self) -> Reply:
        return Reply(self.settings.terms or messages.DEFAULT_TERMS)

    def support(self) -> Reply:
        return Reply(messages.paysupport(self.settings.support))

    async def recent(self, user_id: int) -> list[str]:
        """The user's last purchases, one line each, for /quota."""
        found: list[Purchase] = await self.db.read(purchases.recent, user_id=user_id, limit=RECENT_PURCHASES)
        return [
            messages.purchase_line(
                _date(purchase.at),
                purchase.credits,
                f"{purchase.price} Stars" if purchase.currency == STARS else "Discord",
                purchase.state != purchases.PAID,
            )
            for purchase in found
        ]

    async def refund(self, actor: Actor, charge_id: str, refund: Refunder, *, force: bool = False) -> str:
        """`/admin refund`: take the purchase's credits back, then have the platform return the money.

        Refused when the user spent some of those credits, unless ``force`` (which takes back the unspent
        ones). If the platform refuses, the credits are given back."""
        self.admin.require(actor)
        start = await self.db.write(
            purchases.start_refund, charge_id=charge_id, force=force, actor=actor.key, now=self.clock()
        )
        purchase = start.purchase
        match start.step:
            case RefundStep.UNKNOWN:
                raise UserError(messages.REFUND_UNKNOWN)
            case RefundStep.ALREADY:
                return messages.REFUND_ALREADY
            case RefundStep.SPENT:
                assert purchase is not None
                raise UserError(messages.refund_spent(purchase.credits, start.available))
        assert purchase is not None and purchase.id is not None
        if purchase.platform != "telegram":
            await self.db.write(purchases.undo_refund, purchase_id=purchase.id, actor=actor.key, now=self.clock())
            raise UserError(messages.REFUND_ELSEWHERE)
        buyer = await self.db.read(users.get_user, user_id=purchase.user_id)
        assert buyer is not None
        try:
            await refund(buyer.platform_user_id, charge_id)
        except RefundRefused as refused:
            if not refused.already:
                await self.db.write(purchases.undo_refund, purchase_id=purchase.id, actor=actor.key, now=self.clock())
                raise UserError(messages.refund_refused(refused.reason)) from None
            log.info("charge %s was refunded at the platform already", charge_id)
        now = self.clock()

        def finish(session: Any) -> None:
            purchases.finish_refund(session=session, purchase_id=purchase.id or 0, now=now)
            audit.record(
                session=session,
                actor=actor.key,
                action="refund",
                target=f"{buyer.platform}:{buyer.platform_user_id}",
                now=now,
                detail={"charge_id": charge_id, "credits_removed": start.removed, "forced": force},
            )

        await self.db.write(finish)
        log.info("admin %s refunded charge %s; %d credits taken back", actor.key, charge_id, start.removed)
        return messages.refunded(charge_id, start.removed)


def _credits_of(payload: str) -> int | None:
    """The credits an invoice payload of ours names ("pack:<credits>:<stars>")."""
    kind, _, rest = payload.partition(":")
    credits = rest.partition(":")[0]
    return int(credits) if kind == "pack" and credits.isdigit() and int(credits) > 0 else None


def _date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")
