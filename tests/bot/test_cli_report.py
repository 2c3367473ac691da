"""`likeness admin report` from the shell: the table, CSV and JSON of the days asked for."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from storage import purchases, users
from storage.db import Database
from storage.purchases import NewPurchase
from tests.bot.test_cli_admin import likeness


async def _sell(data_dir: Path) -> None:
    db = Database(f"sqlite:///{data_dir / 'likeness.db'}")
    try:
        user = await db.write(users.ensure_user, platform="telegram", platform_user_id="7", now=time.time(),
                              welcome_credits=0)  # fmt: skip
        sale = NewPurchase("telegram", "stx-9", user.id or 0, 50, 100, "XTR", "pack:50:100")
        await db.write(purchases.credit, purchase=sale, now=time.time())
    finally:
        await db.dispose()


async def test_report_prints_a_table_csv_or_json(tmp_path: Path) -> None:
    assert likeness(tmp_path, "db", "upgrade").returncode == 0
    await _sell(tmp_path / "data")
    table = likeness(tmp_path, "admin", "report")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["day", "backend", "jobs"]
    assert "sold on telegram: 50 credits in 1 purchases, 100 Stars" in table.stdout
    as_csv = likeness(tmp_path, "admin", "report", "--days", "3", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert (row["kind"], row["name"], row["credits_sold"], row["stars"]) == ("sales", "telegram", "50", "100")
    as_json = likeness(tmp_path, "admin", "report", "--format", "json")
    assert json.loads(as_json.stdout)["sales"][0]["purchases"] == 1
    wrong = likeness(tmp_path, "admin", "report", "--days", "0")
    assert wrong.returncode == 1 and "Days must be" in wrong.stderr
