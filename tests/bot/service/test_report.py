"""The money report: per UTC day and backend, jobs, images, spend, credits charged, failures; sales and refunds."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bot.errors import UserError
from bot.service.imagine import ImagineInput
from bot.service.report import as_csv, as_json, as_table
from engine.errors import ProviderFailedError
from storage import purchases
from storage.purchases import NewPurchase
from tests.bot.service.conftest import ADMIN, ANN, BOB, ChatTarget, World, face_photo


async def _render(world: World, event: str, fail: bool = False) -> None:
    world.backend.fail = ProviderFailedError("boom") if fail else None
    await world.service.imagine.submit(ANN, ImagineInput(event, "a knight", ChatTarget("c1"), photos=(face_photo(),)))
    await world.run_jobs()


async def test_the_report_counts_jobs_spend_charges_and_sales_per_day(world: World) -> None:
    await _render(world, "ok-1")
    await _render(world, "ok-2")
    await _render(world, "bad", fail=True)
    user = await world.user(ANN)
    for charge, credits in (("stx-1", 50), ("stx-2", 120)):
        await world.db.write(
            purchases.credit,
            purchase=NewPurchase("telegram", charge, user.id or 0, credits, credits * 2, "XTR", f"pack:{credits}"),
            now=world.service.admin.clock(),
        )
    start = await world.db.write(purchases.start_refund, charge_id="stx-1", force=False, actor="a", now=1.0)
    assert start.purchase is not None
    await world.db.write(purchases.finish_refund, purchase_id=start.purchase.id or 0, now=world.service.admin.clock())

    report = await world.service.admin.report(ADMIN, days=2)
    [day] = report.backends
    assert (day.backend, day.jobs, day.succeeded, day.failed, day.images, day.credits_charged) == (
        "scripted",
        3,
        2,
        1,
        2,
        2,
    )
    assert day.failure_rate == pytest.approx(1 / 3) and day.likeness is None
    [sales] = report.sales
    assert (sales.platform, sales.purchases, sales.credits_sold, sales.price) == ("telegram", 2, 170, 340)
    assert (sales.refunds, sales.credits_refunded) == (1, 50)

    table = as_table(report)
    assert table.splitlines()[0].split() == ["day", "backend", "jobs", "images", "spend", "$", "charged", "failed",
                                             "likeness"]  # fmt: skip
    assert "sold on telegram: 170 credits in 2 purchases, 340 Stars; 1 refunded (50 credits)" in table
    rows = list(csv.DictReader(io.StringIO(as_csv(report))))
    assert [(row["kind"], row["name"]) for row in rows] == [("backend", "scripted"), ("sales", "telegram")]
    assert rows[0]["credits_charged"] == "2" and rows[0]["failure_rate"] == "0.3333" and rows[0]["likeness"] == ""
    assert rows[1]["credits_sold"] == "170" and rows[1]["stars"] == "340"
    parsed = json.loads(as_json(report))
    assert parsed["backends"][0]["jobs"] == 3 and parsed["sales"][0]["refunds"] == 1

    stats = await world.service.admin.stats(ADMIN)
    assert "Today by backend:" in stats and "scripted" in stats


async def test_only_admins_read_the_report(world: World) -> None:
    with pytest.raises(UserError):
        await world.service.admin.report(BOB)
    with pytest.raises(UserError):
        await world.service.admin.report(ADMIN, days=0)
