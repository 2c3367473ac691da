"""The money report as the operator reads it: a table for the chat and the shell, CSV or JSON for tools."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from storage.quota import utc_day
from storage.report import BackendDay, Report, SalesDay

FORMATS = ("table", "csv", "json")
COLUMNS = (
    "day", "kind", "name", "jobs", "images", "spend_usd", "credits_charged", "failure_rate", "likeness",
    "purchases", "credits_sold", "stars", "refunds", "credits_refunded",
)  # fmt: skip


def _backend_fields(entry: BackendDay) -> dict[str, Any]:
    return {
        "day": entry.day,
        "kind": "backend",
        "name": entry.backend,
        "jobs": entry.jobs,
        "images": entry.images,
        "spend_usd": round(entry.spend_usd, 6),
        "credits_charged": entry.credits_charged,
        "failure_rate": None if entry.failure_rate is None else round(entry.failure_rate, 4),
        "likeness": None if entry.likeness is None else round(entry.likeness, 4),
    }


def _sales_fields(sale: SalesDay) -> dict[str, Any]:
    return {
        "day": sale.day,
        "kind": "sales",
        "name": sale.platform,
        "purchases": sale.purchases,
        "credits_sold": sale.credits_sold,
        "stars": sale.price if sale.platform == "telegram" else None,
        "refunds": sale.refunds,
        "credits_refunded": sale.credits_refunded,
    }


def rows(report: Report) -> list[dict[str, Any]]:
    """One row per day and backend, then per day and platform sold on; day by day."""
    found = [_backend_fields(entry) for entry in report.backends] + [_sales_fields(sale) for sale in report.sales]
    return sorted(found, key=lambda row: (row["day"], row["kind"], row["name"]))


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(report):
        writer.writerow({column: "" if row.get(column) is None else row.get(column) for column in COLUMNS})
    return out.getvalue().rstrip("\n")


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "from": utc_day(report.start),
            "to": utc_day(report.end - 1),
            "backends": [_backend_fields(entry) for entry in report.backends],
            "sales": [_sales_fields(sale) for sale in report.sales],
        },
        indent=2,
    )


def as_table(report: Report) -> str:
    """Aligned columns for a terminal or a chat."""
    header = ("day", "backend", "jobs", "images", "spend $", "charged", "failed", "likeness")
    lines: list[tuple[str, ...]] = [header]
    for entry in report.backends:
        rate = "-" if entry.failure_rate is None else f"{entry.failure_rate:.0%}"
        likeness = "-" if entry.likeness is None else f"{entry.likeness:.2f}"
        lines.append(
            (entry.day, entry.backend, str(entry.jobs), str(entry.images), f"{entry.spend_usd:.4f}",
             str(entry.credits_charged), rate, likeness)
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    if len(lines) == 1:
        text.append("(no jobs ended)")
    for sale in report.sales:
        price = f", {sale.price} Stars" if sale.platform == "telegram" else ""
        refunds = f"; {sale.refunds} refunded ({sale.credits_refunded} credits)" if sale.refunds else ""
        text.append(f"{sale.day}  sold on {sale.platform}: {sale.credits_sold} credits in {sale.purchases} "
                    f"purchases{price}{refunds}")  # fmt: skip
    return "\n".join(text)


def formatted(report: Report, fmt: str) -> str:
    return {"table": as_table, "csv": as_csv, "json": as_json}[fmt](report)
