"""The Compose files and the Dockerfile: each profile resolves, runs the right commands, bakes in no secret.

Compose resolves the files here with the docker-compose 1.29 command (Debian package ``docker-compose``),
which interpolates, merges and validates against the Compose schema without a Docker engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
SCALE = ROOT / "docker-compose.scale.yml"
DOCKERFILE = ROOT / "Dockerfile"

CHAT_SECRETS = ("LIKENESS_TELEGRAM__TOKEN", "LIKENESS_TELEGRAM__WEBHOOK_SECRET", "LIKENESS_DISCORD__TOKEN")
PROVIDER_SECRETS = (
    "LIKENESS_FAL__KEY",
    "LIKENESS_REPLICATE__TOKEN",
    "LIKENESS_WAVESPEED__KEY",
    "LIKENESS_SEGMIND__KEY",
)
OTHER_SECRETS = ("POSTGRES_PASSWORD", "HF_TOKEN")
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD")
PG_URL = "postgresql://likeness@postgres:5432/likeness"

COMPOSE = shutil.which("docker-compose")
INSTALL_HINT = "apt-get install -y --no-install-recommends docker-compose"


@pytest.fixture(scope="module")
def compose() -> str:
    if COMPOSE is None:
        reason = f"docker-compose is not installed (Debian: {INSTALL_HINT}): Compose profiles not resolved"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return COMPOSE


def resolve(
    compose: str,
    tmp_path: Path,
    *profiles: str,
    scale_override: bool = False,
    env: dict[str, str] | None = None,
    files: tuple[Path, ...] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` in a clean environment (no .env of the developer's is read)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    chosen = files or ((BASE, SCALE) if scale_override else (BASE,))
    args = [compose, "--env-file", str(empty_env_file), "--project-directory", str(ROOT)]
    for path in chosen:
        args += ["-f", str(path)]
    for profile in profiles:
        args += ["--profile", profile]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [*args, "config"],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def config(compose: str, tmp_path: Path, *profiles: str, **kw: Any) -> dict[str, Any]:
    result = resolve(compose, tmp_path, *profiles, **kw)
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def active(resolved: dict[str, Any], *profiles: str) -> dict[str, dict[str, Any]]:
    """The services ``up`` starts with these profiles (docker-compose 1.29's ``config`` lists them all)."""
    return {
        name: service
        for name, service in resolved["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Volume name (or host path) → path in the container."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":") if isinstance(entry, str) else (entry["source"], entry["target"])
        found[source] = target
    return found


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name → its instructions, continuation lines joined."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return stages


# --- the default profile ------------------------------------------------------------------------------


def test_default_profile_is_the_bot_alone_on_sqlite(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path)
    services = active(resolved)
    assert set(services) == {"bot"}
    bot = services["bot"]
    assert bot["command"] == ["run"]
    assert bot["build"]["target"] == "slim"
    assert mounts(bot) == {"data": "/data"}
    assert "data" in resolved["volumes"]
    env = bot["environment"]
    assert env["LIKENESS_DATA_DIR"] == "/data"
    # No database URL: the settings fall back to the SQLite file in the data directory.
    assert env["LIKENESS_DATABASE_URL"] is None
    assert env["LIKENESS_METRICS__ADDRESS"] == "0.0.0.0:9464"
    assert "9464/healthz" in " ".join(bot["healthcheck"]["test"])
    assert "depends_on" not in bot


def test_settings_with_defaults_follow_the_environment(compose: str, tmp_path: Path) -> None:
    defaults = config(compose, tmp_path)["services"]["bot"]["environment"]
    assert defaults["LIKENESS_RETENTION__DAYS"] == "30"
    assert defaults["LIKENESS_LOG__FORMAT"] == "json"
    chosen = config(
        compose,
        tmp_path,
        env={"LIKENESS_RETENTION__DAYS": "7", "LIKENESS_ROUTE": "fal-flux-pulid,segmind-flux-pulid"},
    )["services"]["bot"]["environment"]
    assert chosen["LIKENESS_RETENTION__DAYS"] == "7"
    assert chosen["LIKENESS_ROUTE"] == "fal-flux-pulid,segmind-flux-pulid"


# --- scale -----------------------------------------------------------------------------------------------


def test_scale_profile_runs_postgres_migration_bot_and_workers(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path, "scale", scale_override=True)
    services = active(resolved, "scale")
    assert set(services) == {"bot", "postgres", "migrate", "worker", "s3"}

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert mounts(postgres) == {"pgdata": "/var/lib/postgresql/data"}
    assert "pgdata" in resolved["volumes"]

    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")
    # The bucket the blob URL names is created when the store starts.
    assert "-bucket=likeness" in s3["command"]
    assert "8333/healthz" in " ".join(s3["healthcheck"]["test"])
    assert mounts(s3) == {"s3data": "/data"}
    assert "s3data" in resolved["volumes"]

    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["s3"]["condition"] == "service_healthy"
    # Photos and outputs are in the object store: no volume is shared between hosts.
    assert mounts(worker) == {}
    # The drain ends before Compose kills the container.
    assert float(worker["environment"]["LIKENESS_DISPATCH__DRAIN_S"]) < float(worker["stop_grace_period"].rstrip("s"))

    bot = services["bot"]
    assert bot["command"] == ["run"]
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # Front-end-only: chat, delivery and health; the workers render.
    assert bot["environment"]["LIKENESS_DISPATCH__CONCURRENCY"] == "0"
    for name in ("bot", "migrate", "worker"):
        env = services[name]["environment"]
        assert env["LIKENESS_DATABASE_URL"] == PG_URL, name
        # The password travels separately, never inside the URL.
        assert "PGPASSWORD" in env, name
    for name in ("bot", "worker"):
        env = services[name]["environment"]
        assert env["LIKENESS_BLOBS__URL"] == "s3://likeness/blobs", name
        assert env["AWS_ENDPOINT_URL"] == "http://s3:8333", name
        assert "AWS_ACCESS_KEY_ID" in env and "AWS_SECRET_ACCESS_KEY" in env, name


def test_scale_profile_shares_one_password_between_server_and_clients(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path, "scale", scale_override=True, env={"POSTGRES_PASSWORD": "pw-from-the-shell"})
    services = resolved["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-the-shell"
    for name in ("bot", "migrate", "worker"):
        assert services[name]["environment"]["PGPASSWORD"] == "pw-from-the-shell", name


def test_scale_profile_without_the_override_keeps_the_bot_on_sqlite(compose: str, tmp_path: Path) -> None:
    services = active(config(compose, tmp_path, "scale"), "scale")
    assert services["bot"]["environment"]["LIKENESS_DATABASE_URL"] is None
    assert services["worker"]["environment"]["LIKENESS_DATABASE_URL"] == PG_URL


# --- gpu ---------------------------------------------------------------------------------------------------


def test_gpu_profile_adds_a_local_engine_worker_with_an_nvidia_gpu(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path, "gpu")
    services = active(resolved, "gpu")
    assert set(services) == {"bot", "gpu-worker"}
    gpu = services["gpu-worker"]
    assert gpu["command"] == ["worker"]
    assert gpu["build"]["target"] == "local"
    assert gpu["image"] != services["bot"]["image"]
    env = gpu["environment"]
    assert env["LIKENESS_LOCAL__ENABLED"] == "true"
    volumes = mounts(gpu)
    assert volumes["models"] == env["LIKENESS_LOCAL__MODELS_DIR"] == "/models"
    assert volumes["data"] == "/data"
    assert {"data", "models"} <= set(resolved["volumes"])
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert devices[0].get("count") or devices[0].get("device_ids")


def test_gpu_and_scale_together_put_the_gpu_worker_on_postgres(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path, "scale", "gpu", scale_override=True)
    services = active(resolved, "scale", "gpu")
    assert set(services) == {"bot", "postgres", "migrate", "worker", "gpu-worker", "s3"}
    gpu = services["gpu-worker"]
    assert gpu["environment"]["LIKENESS_DATABASE_URL"] == PG_URL
    assert gpu["environment"]["LIKENESS_BLOBS__URL"] == "s3://likeness/blobs"
    assert gpu["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


# --- secrets -------------------------------------------------------------------------------------------


def test_no_secret_resolves_to_a_value_when_none_is_given(compose: str, tmp_path: Path) -> None:
    resolved = config(compose, tmp_path, "scale", "gpu", scale_override=True)
    for name, service in resolved["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable) or variable == "PGPASSWORD":
                assert value in (None, ""), f"{name}: {variable} has a value baked in"


def test_secrets_pass_through_from_the_environment_to_the_services_that_need_them(compose: str, tmp_path: Path) -> None:
    given = {name: f"sentinel-{name.lower()}" for name in (*CHAT_SECRETS, *PROVIDER_SECRETS, *OTHER_SECRETS)}
    services = config(compose, tmp_path, "scale", "gpu", scale_override=True, env=given)["services"]
    bot, worker, gpu = (
        services["bot"]["environment"],
        services["worker"]["environment"],
        services["gpu-worker"]["environment"],
    )
    for name in (*CHAT_SECRETS, *PROVIDER_SECRETS):
        assert bot[name] == given[name]
    for env in (worker, gpu):
        for name in PROVIDER_SECRETS:
            assert env[name] == given[name]
        # Workers do not talk to the chat platforms: they never hold their tokens.
        for name in CHAT_SECRETS:
            assert name not in env
    assert gpu["HF_TOKEN"] == given["HF_TOKEN"]


def test_files_hold_no_literal_secret() -> None:
    """Every secret-looking variable in the files is a pass-through or a reference with an empty default."""
    checked = 0
    for path in (BASE, SCALE):
        document = yaml.safe_load(path.read_text())
        for service in document["services"].values():
            env = service.get("environment") or {}
            assert isinstance(env, dict), "environment is written as a mapping"
            for variable, value in env.items():
                if not (SECRET_NAME.search(variable) or variable == "PGPASSWORD"):
                    continue
                checked += 1
                assert value is None or re.fullmatch(r"\$\{[A-Z0-9_]+(:-)?\}", str(value)), (
                    f"{path.name}: {variable}={value!r}"
                )
    assert checked >= len(CHAT_SECRETS) + len(PROVIDER_SECRETS) + len(OTHER_SECRETS)


# --- the validator itself ------------------------------------------------------------------------------


def test_compose_rejects_an_invalid_file(compose: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "services:\n  bot:\n    image: likeness\n    deploy:\n      resources:\n        reservations:\n"
        "          devices:\n            - driver: nvidia\n              gpus: 1\n"
    )
    result = resolve(compose, tmp_path, files=(broken,))
    assert result.returncode != 0
    assert "gpus" in result.stderr


# --- the Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_default_and_a_local_image() -> None:
    stages = dockerfile_stages()
    assert {"slim", "local"} <= set(stages)
    # The last stage is what a plain `docker build .` produces: the image without torch.
    assert list(stages)[-1] == "slim"
    text = DOCKERFILE.read_text()
    # The local engine needs the gpu extra too (EVA-CLIP through timm, the face parser through facexlib).
    assert 'pip install ".[local,gpu]"' in text
    slim_chain = " ".join(stages["build"] + stages["runtime"] + stages["slim"])
    assert "[local]" not in slim_chain
    assert "COPY --from=build /opt/likeness" in " ".join(stages["slim"])
    assert "COPY --from=build-local /opt/likeness" in " ".join(stages["local"])


def test_dockerfile_runs_likeness_unprivileged_with_data_in_a_volume() -> None:
    stages = dockerfile_stages()
    runtime = " ".join(stages["runtime"])
    assert 'ENTRYPOINT ["tini", "--", "likeness"]' in runtime
    assert 'VOLUME ["/data"]' in runtime
    assert "LIKENESS_DATA_DIR=/data" in runtime
    for name in ("slim", "local"):
        users = [line.split()[1] for line in stages[name] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), name
    assert "LIKENESS_LOCAL__MODELS_DIR=/models" in " ".join(stages["local"])


def test_compose_build_targets_exist_in_the_dockerfile() -> None:
    stages = set(dockerfile_stages())
    document = yaml.safe_load(BASE.read_text())
    targets = {service["build"]["target"] for service in document["services"].values() if "build" in service}
    assert targets == {"slim", "local"}
    assert targets <= stages


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is excluded first, then only the package and its metadata are let back in.
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "bot", "engine", "storage"}
