"""The `likeness` command: parses arguments and calls the composition root in `bot.wiring`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import logs
from bot.errors import OperatorError, UserError
from bot.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness", description="Identity-preserving portrait bot.")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="front ends, dispatcher and delivery in one process")
    commands.add_parser("worker", help="dispatcher only, for extra hosts sharing a PostgreSQL database")

    gen = commands.add_parser("generate", help="render one job through the ledger and dispatcher")
    gen.add_argument("--face", action="append", required=True, type=Path, help="face photo (repeat for more)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--backend", help="run on this backend only (no failover)")
    gen.add_argument("--out", type=Path, default=Path("./likeness-out"))
    gen.add_argument("--negative", dest="negative_prompt")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--aspect", help="e.g. 3:4")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--id-weight", dest="id_weight", type=float)
    gen.add_argument("--start-step", dest="start_step", type=int)
    gen.add_argument("--true-cfg", dest="true_cfg", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--num-images", dest="num_images", type=int, default=1)
    gen.add_argument("--format", dest="output_format", choices=["jpeg", "png", "webp"])
    gen.add_argument("--mode", choices=["fidelity", "extreme style"], help="SDXL PuLID (fal-pulid) only")

    models = commands.add_parser("models", help="local engine weights").add_subparsers(
        dest="models_command", required=True
    )
    models.add_parser("download", help="fetch and verify every weight file (FLUX.1-dev needs HF_TOKEN)")
    models.add_parser("check", help="list missing or corrupt weight files")

    discord = commands.add_parser("discord", help="Discord set-up").add_subparsers(
        dest="discord_command", required=True
    )
    sync = discord.add_parser("sync", help="register the slash commands globally, or in one guild")
    sync.add_argument("--guild", type=int, help="a guild id: commands appear there at once")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply pending migrations")

    admin = commands.add_parser("admin", help="quotas, limits and bans").add_subparsers(
        dest="admin_command", required=True
    )
    grant = admin.add_parser("grant", help="add credits (negative takes them away)")
    grant.add_argument("user", help="<platform>:<id>")
    grant.add_argument("credits")
    limit = admin.add_parser("limit", help="jobs per UTC day for a user, or the default")
    limit.add_argument("user", help="<platform>:<id> or 'default'")
    limit.add_argument("jobs")
    ban = admin.add_parser("ban")
    ban.add_argument("user")
    ban.add_argument("reason", nargs="*")
    unban = admin.add_parser("unban")
    unban.add_argument("user")
    admin.add_parser("stats", help="today's jobs, success rate, spend, queue depth")
    money = admin.add_parser("report", help="per day and backend: jobs, images, spend, credits charged and sold")
    money.add_argument("--days", type=int, default=7, help="days back, today included (default 7)")
    money.add_argument("--format", choices=["table", "csv", "json"], default="table")
    pause = admin.add_parser("pause", help="stop accepting new jobs everywhere")
    pause.add_argument("reason", nargs="*")
    admin.add_parser("resume")
    safety = admin.add_parser("safety", help="what happens to results flagged unsafe, everywhere (show or set)")
    safety.add_argument("policy", nargs="?", choices=["block", "spoiler", "allow", "default"])
    return parser


async def _admin(settings: Settings, args: argparse.Namespace) -> str:
    from bot.service.actors import SHELL_ACTOR
    from bot.wiring.admin import open_admin

    async with open_admin(settings) as service:
        try:
            match args.admin_command:
                case "grant":
                    return await service.grant(SHELL_ACTOR, args.user, args.credits)
                case "limit":
                    return await service.limit(SHELL_ACTOR, args.user, args.jobs)
                case "ban":
                    return await service.ban(SHELL_ACTOR, args.user, " ".join(args.reason))
                case "unban":
                    return await service.ban(SHELL_ACTOR, args.user, banned=False)
                case "stats":
                    return await service.stats(SHELL_ACTOR)
                case "report":
                    from bot.service.report import formatted

                    return formatted(await service.report(SHELL_ACTOR, days=args.days), args.format)
                case "pause":
                    return await service.pause(SHELL_ACTOR, " ".join(args.reason))
                case "resume":
                    return await service.pause(SHELL_ACTOR, paused=False)
                case "safety":
                    return await service.safety(SHELL_ACTOR, args.policy or "")
        except UserError as exc:  # the admin use cases answer the shell as they answer a chat admin
            raise OperatorError(exc.message) from None
    raise AssertionError(args.admin_command)


async def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    match args.command:
        case "db":
            from bot.wiring.store import upgrade_database

            await upgrade_database(settings)
            print("database is up to date")
        case "admin":
            print(await _admin(settings, args))
        case "generate":
            for path in await _generate(settings, args):
                print(path)
        case "models":
            return _models(settings, args.models_command)
        case "discord":
            from bot.discord.sync import sync_commands

            try:
                count = await sync_commands(settings.discord, args.guild)
            except ValueError:
                raise OperatorError("LIKENESS_DISCORD__TOKEN is not set") from None
            where = f"guild {args.guild}" if args.guild else "globally"
            print(f"synced {count} commands {where}")
        case "run":
            from bot.wiring.service import run_service

            await run_service(settings)
        case "worker":
            from bot.wiring.worker import run_worker

            await run_worker(settings)
    return 0


GENERATE_PARAMS = (
    "negative_prompt", "width", "height", "aspect", "steps", "guidance", "id_weight", "start_step",
    "true_cfg", "seed", "num_images", "output_format", "mode",
)  # fmt: skip


async def _generate(settings: Settings, args: argparse.Namespace) -> list[Path]:
    from bot.generate import GenerateArgs, generate
    from bot.wiring.engine import open_engine

    params = {name: getattr(args, name) for name in GENERATE_PARAMS}
    async with open_engine(settings) as parts:
        try:
            return await generate(parts, GenerateArgs(args.face, args.prompt, args.backend, args.out, params))
        except UserError as exc:  # the photo and prompt checks speak to whoever submitted the job
            raise OperatorError(exc.message) from None


def _models(settings: Settings, command: str) -> int:
    from engine.local import weights

    models_dir = settings.models_dir
    if command == "check":
        problems = weights.check(models_dir)
        for problem in problems:
            print(f"{problem.artifact}: {problem.path}: {problem.reason}")
        if not problems:
            print(f"all local engine weights present in {models_dir}")
        return 1 if problems else 0
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")

    def show(event: weights.DownloadEvent) -> None:
        state = "done" if event.done else "fetching"
        print(f"{event.artifact} [{event.index}/{event.total}] {state}: {event.path}", file=sys.stderr)

    try:
        written = weights.download(models_dir, token, show)
    except weights.WeightsError as exc:
        raise OperatorError(str(exc)) from None
    for path in written:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a settings or operator error ends as one line on stderr and a non-zero exit."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(exc, code=2)
    secrets = settings.secrets()
    logs.configure(fmt=settings.log.format, level=settings.log.level, secrets=secrets)
    try:
        return asyncio.run(_dispatch(settings, args))
    except OperatorError as exc:
        return _fail(exc, code=1, secrets=secrets)
    except KeyboardInterrupt:
        return 130


def _fail(error: OperatorError, *, code: int, secrets: Sequence[str] = ()) -> int:
    line = " ".join(logs.Redactor(secrets).redact(error.message).split())
    print(f"likeness: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
