"""Discord monetization as its docs describe it: SKUs, the entitlements a purchase creates, consuming them.

A user buys a SKU in Discord's own store (from a premium button, style 6 with a ``sku_id``); Discord then
creates an entitlement, sends the bot ENTITLEMENT_CREATE, and lists it in every later interaction of that
user (``entitlements``) and through GET /applications/{app}/entitlements until it ends. An entitlement to a
consumable SKU (type 3) stays until the app consumes it (POST …/entitlements/{id}/consume, 204).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.fakes.discord.models import Json, Snowflakes, now_iso
from tests.fakes.discord.protocol import ApiError

DURABLE, CONSUMABLE, SUBSCRIPTION = 2, 3, 5  # SKU types
AVAILABLE = 1 << 2  # SKU flag
PURCHASE, TEST_MODE_PURCHASE = 1, 4  # entitlement types
UNKNOWN_SKU, UNKNOWN_ENTITLEMENT = 10027, 10029


@dataclass
class Monetization:
    """The application's SKUs and every entitlement to them."""

    application_id: int
    ids: Snowflakes
    skus: dict[int, Json] = field(default_factory=dict)
    entitlements: dict[int, Json] = field(default_factory=dict)
    consumed: list[int] = field(default_factory=list)  # entitlement ids, in the order the app consumed them

    def add_sku(self, name: str, *, kind: int = CONSUMABLE) -> Json:
        sku_id = self.ids.next()
        sku: Json = {
            "id": str(sku_id),
            "type": kind,
            "application_id": str(self.application_id),
            "name": name,
            "slug": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
            "flags": AVAILABLE,
        }
        self.skus[sku_id] = sku
        return sku

    def grant(self, user_id: int, sku_id: int, *, kind: int = PURCHASE) -> Json:
        """A purchase of the SKU by the user: the entitlement Discord creates for it."""
        sku = self.skus.get(sku_id)
        if sku is None:
            raise ApiError(404, UNKNOWN_SKU, "Unknown SKU")
        entitlement: Json = {
            "id": str(self.ids.next()),
            "sku_id": str(sku_id),
            "application_id": str(self.application_id),
            "user_id": str(user_id),
            "type": kind,
            "deleted": False,
            "starts_at": now_iso(),
            "ends_at": None,
        }
        if sku["type"] == CONSUMABLE:
            entitlement["consumed"] = False
        self.entitlements[int(entitlement["id"])] = entitlement
        return entitlement

    def active_for(self, user_id: int) -> list[Json]:
        """What an interaction of the user carries: their entitlements not deleted, ended or consumed."""
        return [
            dict(e)
            for e in self.entitlements.values()
            if e.get("user_id") == str(user_id) and not e["deleted"] and not e.get("consumed")
        ]

    def listing(self, query: dict[str, str]) -> list[Json]:
        """GET /applications/{app}/entitlements with its documented filters."""
        found = list(self.entitlements.values())
        if "user_id" in query:
            found = [e for e in found if e.get("user_id") == query["user_id"]]
        if "guild_id" in query:
            found = [e for e in found if e.get("guild_id") == query["guild_id"]]
        if query.get("sku_ids"):
            wanted = set(query["sku_ids"].split(","))
            found = [e for e in found if e["sku_id"] in wanted]
        if query.get("exclude_deleted", "true").lower() in ("true", "1"):
            found = [e for e in found if not e["deleted"]]
        if query.get("exclude_ended", "false").lower() in ("true", "1"):
            found = [e for e in found if e.get("ends_at") is None]
        if "after" in query:
            found = [e for e in found if int(e["id"]) > int(query["after"])]
        if "before" in query:
            found = [e for e in found if int(e["id"]) < int(query["before"])]
        limit = max(1, min(100, int(query.get("limit") or 100)))
        found.sort(key=lambda e: int(e["id"]), reverse="after" not in query)
        return [dict(e) for e in found[:limit]]

    def get(self, entitlement_id: int) -> Json:
        entitlement = self.entitlements.get(entitlement_id)
        if entitlement is None:
            raise ApiError(404, UNKNOWN_ENTITLEMENT, "Unknown Entitlement")
        return entitlement

    def consume(self, entitlement_id: int) -> None:
        entitlement = self.get(entitlement_id)
        if "consumed" not in entitlement:  # only one-time purchase consumable SKUs can be consumed
            raise ApiError(400, 0, "Entitlement is not consumable")
        if entitlement["consumed"]:
            raise ApiError(400, 0, "Entitlement has already been consumed")
        entitlement["consumed"] = True
        self.consumed.append(entitlement_id)
