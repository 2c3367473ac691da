"""The installed `likeness` entry point: settings errors, db upgrade and admin commands from the shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LIKENESS = shutil.which("likeness") or str(Path(os.sys.executable).with_name("likeness"))


def likeness(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    clean.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(
        [LIKENESS, *args], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def test_malformed_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = likeness(tmp_path, "admin", "stats", LIKENESS_QUEUE__LEASE_S="soon")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip(),
    ]
    assert result.stderr.startswith("likeness: LIKENESS_QUEUE__LEASE_S:")


def test_unknown_backend_in_route_is_named(tmp_path: Path) -> None:
    result = likeness(tmp_path, "db", "upgrade", LIKENESS_ROUTE="fal-flux-pulid,dall-e")
    assert result.returncode == 2
    assert "LIKENESS_ROUTE" in result.stderr and "dall-e" in result.stderr


def test_db_upgrade_creates_the_sqlite_file(tmp_path: Path) -> None:
    result = likeness(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "likeness.db").exists()


def test_admin_grant_limit_ban_and_stats(tmp_path: Path) -> None:
    grant = likeness(tmp_path, "admin", "grant", "telegram:42", "5")
    assert grant.returncode == 0, grant.stderr
    assert grant.stdout.strip() == "Granted 5 credits to telegram:42; balance now 15."
    # Taking away more than the free balance is refused, naming what may be taken, and changes nothing.
    too_much = likeness(tmp_path, "admin", "grant", "telegram:42", "-100")
    assert too_much.returncode == 1 and too_much.stdout == ""
    assert "likeness: Not taken: telegram:42 has 15 credits free" in too_much.stderr
    assert "Take away at most 15." in too_much.stderr and "Traceback" not in too_much.stderr
    take = likeness(tmp_path, "admin", "grant", "telegram:42", "-15")
    assert take.returncode == 0, take.stderr
    assert take.stdout.strip() == "Took 15 credits from telegram:42; balance now 0."
    limit = likeness(tmp_path, "admin", "limit", "default", "7")
    assert limit.stdout.strip() == "Daily job limit for the default set to 7."
    ban = likeness(tmp_path, "admin", "ban", "discord:9", "spam")
    assert ban.stdout.strip() == "discord:9 is banned."
    stats = likeness(tmp_path, "admin", "stats")
    assert "Users: 2" in stats.stdout and "Queue depth: 0 queued" in stats.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("grant", "telegram:42", "lots"), "whole number"), (("grant", "icq:1", "1"), "<platform>:<id>")],
)
def test_bad_admin_input_is_one_clear_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = likeness(tmp_path, "admin", *args)
    assert result.returncode == 1
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_postgres_requires_explicit_upgrade(tmp_path: Path) -> None:
    url = os.environ.get("LIKENESS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LIKENESS_TEST_POSTGRES_URL is not set: PostgreSQL half not run")
    import uuid

    schema = f"cli_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", url, "-c", f'CREATE SCHEMA "{schema}"'], check=True, capture_output=True)
    try:
        env = {"LIKENESS_DATABASE_URL": url, "LIKENESS_DATABASE_SCHEMA": schema}
        before = likeness(tmp_path, "admin", "stats", **env)
        assert before.returncode == 1 and "likeness db upgrade" in before.stderr
        assert likeness(tmp_path, "db", "upgrade", **env).returncode == 0
        after = likeness(tmp_path, "admin", "stats", **env)
        assert after.returncode == 0, after.stderr
    finally:
        subprocess.run(["psql", url, "-c", f'DROP SCHEMA "{schema}" CASCADE'], check=True, capture_output=True)


def test_models_check_lists_every_missing_file_with_its_path(tmp_path: Path) -> None:
    result = likeness(tmp_path, "models", "check")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    models = tmp_path / "data" / "models"
    assert lines and all(f": {models}/" in line and line.endswith(": missing") for line in lines)
    assert any("pulid_flux_v0.9.1.safetensors" in line for line in lines)
    assert any("antelopev2" in line for line in lines)
