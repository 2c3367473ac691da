"""The fault soak: jobs on PostgreSQL through real `likeness worker` processes and one `likeness run`, with faults
injected at random at two provider fakes and the Telegram fake and workers SIGKILLed every few seconds.

Most jobs are queued straight into the ledger (as the bot's use case does: submit, then NOTIFY) to reach the
volume; a few come from chat. Every result goes out through the real front end to the Telegram fake. At the end
the books are checked: see ``check``. Shared by ``tests/ops/test_fault_soak.py`` and ``benchmarks/fault_soak.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot.retention import sweep_orphans
from bot.service.replies import Button
from storage import blob_refs, jobs, reconcile, tables, users
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.notify import JOBS, PgNotifier
from storage.states import DeliveryState, JobState, LedgerKind
from tests.bot.telegram.stack import face_photo
from tests.fakes import fal, replicate
from tests.fakes.fal import FakeFal, FalScript
from tests.fakes.providers_common import FakeProvider, Handler
from tests.fakes.replicate import FakeReplicate, ReplicateScript
from tests.fakes.telegram import FakeTelegram, TgUser

ROOT = Path(__file__).resolve().parents[2]
LIKENESS = str(Path(sys.executable).with_name("likeness"))
ROUTE = ("fal-flux-pulid", "replicate-flux-pulid")
TOKEN = re.compile(r"soak-[a-z]+-\d+")
WELCOME_CREDITS = 1000
HANG_S = 2.0  # past every provider timeout of the soak worker (tests/ops/soak_worker.py)


# Errors the injected faults cause by design: a submit whose answer never came (failed, refunded, logged), an
# empty account (the backend's circuit opens), a chat update whose reply met a Bot API outage.
EXPECTED = (
    re.compile(r"submit to [a-z-]+ may have been billed without an answer; not re-sent"),
    re.compile(r"[a-z-]+ is unusable \(out_of_credit\): circuit opened"),
    re.compile(r"update \d+ failed .*(Bad Gateway|Flood control exceeded)", re.DOTALL),
)


class Action(StrEnum):
    """What a chaotic provider does with one request instead of simply answering it."""

    RATE_LIMITED = "429"  # refused: 429 with Retry-After
    SERVER_ERROR = "5xx"  # refused: 500/503 with JSON, or a proxy's 502 HTML page
    OUT_OF_CREDIT = "out_of_credit"  # refused: the operator's account is empty
    HANG = "hang"  # no answer before the client's timeout, nothing done
    LOST_ANSWER = "lost_answer"  # done, then the connection dropped before the answer
    MALFORMED = "malformed"  # an unreadable body (for a submit: after taking the job)
    SLOW = "slow"  # done, answered late but within the timeout


REFUSALS = frozenset({Action.RATE_LIMITED, Action.SERVER_ERROR, Action.OUT_OF_CREDIT})
SUBMIT_FAULTS: dict[Action, float] = {
    Action.RATE_LIMITED: 0.05,
    Action.SERVER_ERROR: 0.05,
    Action.OUT_OF_CREDIT: 0.004,
    Action.HANG: 0.006,
    Action.LOST_ANSWER: 0.006,
    Action.MALFORMED: 0.004,
    Action.SLOW: 0.08,
}
POLL_FAULTS: dict[Action, float] = {
    Action.RATE_LIMITED: 0.03,
    Action.SERVER_ERROR: 0.03,
    Action.HANG: 0.005,
    Action.MALFORMED: 0.02,
}


@dataclass(frozen=True)
class Submit:
    """One submit a provider fake saw: whose job (the token in its prompt) and what the chaos did with it."""

    provider: str
    token: str
    action: Action | None


@dataclass
class Chaos:
    """Draws a fault for each request at random, with a fixed seed; switched off for the final checks."""

    rng: random.Random
    on: bool = True
    submits: list[Submit] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    outputs: int = 0

    def draw(self, submit: bool) -> Action | None:
        if not self.on:
            return None
        table = SUBMIT_FAULTS if submit else POLL_FAULTS
        roll = self.rng.random()
        for action, chance in table.items():
            if roll < chance:
                return action
            roll -= chance
        return None


class ChaoticProvider(FakeProvider):
    """A provider fake whose requests meet the soak's random faults before (or after) the real handler.

    Each submit is logged with the token its prompt carries, so the soak can tell which ledger job it was for.
    """

    label: str
    submit_route: str
    faulty_routes: frozenset[str]
    chaos: Chaos

    def prompt_of(self, body: Any) -> str:
        raise NotImplementedError

    def credit_refusal(self) -> web.Response:
        raise NotImplementedError

    def accepted_tokens(self) -> Counter[str]:
        raise NotImplementedError

    def publish(self, data: bytes, content_type: str, *, ttl_s: float | None = None, base: str | None = None) -> str:
        # Each output its own bytes (the fakes draw every one alike), so each is its own blob: a completion that
        # never committed leaves an orphan for the sweep to find.
        self.chaos.outputs += 1
        return super().publish(noise(content_type, self.chaos.outputs), content_type, ttl_s=ttl_s, base=base)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unknown"
        submit = route == self.submit_route
        action = self.chaos.draw(submit) if submit or route in self.faulty_routes else None
        if submit:
            try:
                prompt = self.prompt_of(json.loads(await request.read()))
            except (ValueError, KeyError, TypeError):
                prompt = ""
            found = TOKEN.search(prompt)
            self.chaos.submits.append(Submit(self.label, found[0] if found else "", action))
        if action is None:
            return await super()._middleware(request, handler)
        self.chaos.faults[f"{self.label} {route} {action}"] += 1
        match action:
            case Action.RATE_LIMITED:
                retry_after = str(self.chaos.rng.choice((0, 1, 1, 2)))
                return web.json_response(
                    {"detail": "Rate limit exceeded"}, status=429, headers={"Retry-After": retry_after}
                )
            case Action.SERVER_ERROR:
                if self.chaos.rng.random() < 0.5:
                    return web.Response(
                        status=502,
                        text="<html><body><center>502 Bad Gateway</center></body></html>",
                        content_type="text/html",
                    )
                return web.json_response({"detail": "Internal server error"}, status=self.chaos.rng.choice((500, 503)))
            case Action.OUT_OF_CREDIT:
                return self.credit_refusal()
            case Action.HANG:
                await asyncio.sleep(HANG_S)
                return web.json_response({"detail": "too late"}, status=503)
            case Action.MALFORMED:
                if submit:
                    await super()._middleware(request, handler)
                return web.Response(status=200, text='{"status": "IN_QUE', content_type="application/json")
            case Action.LOST_ANSWER:
                response = await super()._middleware(request, handler)
                if request.transport is not None:
                    request.transport.close()
                return response
            case Action.SLOW:
                response = await super()._middleware(request, handler)
                await asyncio.sleep(self.chaos.rng.uniform(0.2, 0.8))
                return response


class ChaoticFal(ChaoticProvider, FakeFal):
    label = "fal"
    submit_route = "submit"
    faulty_routes = frozenset({"status", "result", "cdn"})

    def prompt_of(self, body: Any) -> str:
        return str(body["prompt"])

    def credit_refusal(self) -> web.Response:
        return web.json_response({"detail": fal.LOCKED}, status=403)

    def accepted_tokens(self) -> Counter[str]:
        return Counter(_token(str(job.input.get("prompt", ""))) for job in self.jobs.values())


class ChaoticReplicate(ChaoticProvider, FakeReplicate):
    label = "replicate"
    submit_route = "create"
    faulty_routes = frozenset({"get", "cdn"})

    def prompt_of(self, body: Any) -> str:
        return str(body["input"]["prompt"])

    def credit_refusal(self) -> web.Response:
        return self._problem(
            402, "Insufficient credit", "You have insufficient credit to run this model. Go to billing."
        )

    def accepted_tokens(self) -> Counter[str]:
        return Counter(_token(str(p.input.get("prompt", ""))) for p in self.predictions.values())


def noise(content_type: str, seed: int) -> bytes:
    """A small image of random pixels, different for each seed, in the format ``content_type`` names."""
    rng = random.Random(seed)
    image = Image.new("RGB", (16, 12))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16 * 12)])
    out = io.BytesIO()
    image.save(out, format=content_type.rsplit("/", 1)[-1].upper())
    return out.getvalue()


def _button_arguments(markup: Any) -> set[str]:
    """What the buttons of a message's inline keyboard act on (a job id, for a result's)."""
    found = set()
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            parsed = Button.parse(str(button.get("callback_data", "")))
            if parsed is not None:
                found.add(parsed[1])
    return found


def _token(prompt: str) -> str:
    found = TOKEN.search(prompt)
    return found[0] if found else ""


@dataclass(frozen=True)
class SoakConfig:
    jobs: int = 1000  # queued straight into the ledger
    chat_jobs: int = 10  # sent as photos from chat
    users: int = 40
    blocked_users: int = 2  # block the bot part-way: their later results are refunded as undeliverable
    workers: int = 2
    kill_every_s: tuple[float, float] = (3.0, 7.0)
    chat_burst_every_s: tuple[float, float] = (1.0, 4.0)
    queue_depth: int = 150  # jobs kept queued ahead of the workers
    within_s: float = 300.0
    seed: int = 1


@dataclass
class Figures:
    jobs: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)
    submits: int = 0
    refused_submits: int = 0
    unanswered_submits: int = 0
    accepted: int = 0
    provider_faults: int = 0
    chat_bursts: int = 0
    kills: int = 0
    worker_exits: int = 0  # workers that ended without being killed
    resumed_jobs: int = 0  # claimed again after their worker died
    interrupted_submits: int = 0  # a worker died between sending a submit and storing its answer
    deliveries: int = 0
    undeliverable: int = 0
    refunds: int = 0
    orphans_swept: int = 0
    elapsed_s: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"jobs                {self.jobs} in {self.elapsed_s:.1f} s ({self.jobs / max(self.elapsed_s, 1):.1f}/s)",
            "by end state        " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_state.items())),
            "failures by reason  " + (", ".join(f"{k} {v}" for k, v in sorted(self.by_error.items())) or "none"),
            f"provider submits    {self.submits}: {self.accepted} accepted, {self.refused_submits} refused and "
            f"retried, {self.unanswered_submits} unanswered (never re-sent)",
            f"provider faults     {self.provider_faults}",
            f"chat fault bursts   {self.chat_bursts}",
            f"worker SIGKILLs     {self.kills}: {self.resumed_jobs} jobs claimed again, {self.interrupted_submits} of "
            "them with a submit sent and its answer lost (failed unknown_outcome, refunded, never re-sent); "
            f"{self.worker_exits} workers ended by themselves",
            f"deliveries          {self.deliveries} delivered, {self.undeliverable} undeliverable",
            f"refunds             {self.refunds}",
            f"orphans swept       {self.orphans_swept}",
        ]


@dataclass
class Worker:
    name: str
    process: asyncio.subprocess.Process

    def busy(self, logs: Path) -> bool:
        """Whether it has started a job: a kill before that would only test the process's start."""
        return "job started" in (logs / f"{self.name}.log").read_text(errors="replace")


class Soak:
    """One soak run: the fakes, the processes, the chaos, and what the checks read afterwards."""

    def __init__(self, config: SoakConfig, postgres_url: str, schema: str, tmp: Path) -> None:
        self.config, self.postgres_url, self.schema, self.tmp = config, postgres_url, schema, tmp
        self.rng = random.Random(config.seed)
        self.chaos = Chaos(random.Random(config.seed + 1))
        self.figures = Figures()
        self.db = Database(postgres_url, schema=schema)
        self.blobs = LocalBlobStore(tmp / "data" / "blobs")
        self.workers: list[Worker] = []
        self.bot: asyncio.subprocess.Process | None = None
        self.logs: list[Path] = []
        self.owners: dict[int, TgUser] = {}  # ledger user id -> chat user
        self.blocked: set[int] = set()  # ledger user ids that blocked the bot
        self.chat_users: list[TgUser] = []
        self._generation = 0
        self.rendered = False  # every job has ended: the chat's outages are over, deliveries drain

    # -- processes ---------------------------------------------------------------------------------------

    def env(self, telegram: FakeTelegram, fal_fake: FakeFal, replicate_fake: FakeReplicate) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "AWS_"))}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "LIKENESS_DATA_DIR": str(self.tmp / "data"),
                "LIKENESS_DATABASE_URL": self.postgres_url,
                "LIKENESS_DATABASE_SCHEMA": self.schema,
                "LIKENESS_ROUTE": ",".join(ROUTE),
                "LIKENESS_FAL__KEY": fal.KEY,
                "LIKENESS_FAL__BASE_URL": fal_fake.url,
                "LIKENESS_REPLICATE__TOKEN": replicate.TOKEN,
                "LIKENESS_REPLICATE__BASE_URL": replicate_fake.url,
                "LIKENESS_REPLICATE__VERSION": replicate.VERSION,
                "LIKENESS_TELEGRAM__TOKEN": telegram.token,
                "LIKENESS_TELEGRAM__BASE_URL": telegram.base_url,
                "LIKENESS_TELEGRAM__BASE_FILE_URL": telegram.base_file_url,
                "LIKENESS_QUEUE__LEASE_S": "3",
                "LIKENESS_QUEUE__HEARTBEAT_S": "1",
                "LIKENESS_QUEUE__RUNNING_CAP": "50",
                "LIKENESS_DISPATCH__CONCURRENCY": "25",
                "LIKENESS_DISPATCH__DEFAULT_BACKEND_CONCURRENCY": "25",
                "LIKENESS_DISPATCH__POLL_S": "0.5",
                "LIKENESS_DISPATCH__BACKOFF_BASE_S": "0.2",
                "LIKENESS_DISPATCH__BACKOFF_CAP_S": "2",
                "LIKENESS_DISPATCH__BREAKER_COOLDOWN_S": "1",
                "LIKENESS_DISPATCH__OUT_OF_CREDIT_COOLDOWN_S": "2",
                "LIKENESS_DISPATCH__DRAIN_S": "1",
                "LIKENESS_DELIVERY__RETRY_BASE_S": "0.5",
                "LIKENESS_DELIVERY__RETRY_CAP_S": "3",
                "LIKENESS_TELEGRAM__MAX_MESSAGES_PER_S": "0",
                "LIKENESS_METRICS__ADDRESS": "",
                # Not under test here: the face judge would re-render the fakes' faceless outputs, and the
                # soak's chat users agreed to the privacy notice outside the bot.
                "LIKENESS_JUDGE__ENABLED": "false",
                "LIKENESS_PRIVACY__CONSENT": "false",
                "LIKENESS_LOG__FORMAT": "json",
                "LIKENESS_LOG__LEVEL": "INFO",
            }
        )
        return env

    async def spawn(self, name: str, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
            return await asyncio.create_subprocess_exec(*args, env=env, stdout=handle, stderr=handle, cwd=ROOT)

    async def start_worker(self, env: dict[str, str]) -> Worker:
        self._generation += 1
        name = f"worker-{self._generation}"
        worker_env = {k: v for k, v in env.items() if not k.startswith("LIKENESS_TELEGRAM__")}
        process = await self.spawn(name, sys.executable, "-m", "tests.ops.soak_worker", env=worker_env)
        return Worker(name, process)

    async def stop_all(self) -> None:
        processes = [w.process for w in self.workers] + ([self.bot] if self.bot else [])
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()

    # -- the run -----------------------------------------------------------------------------------------

    async def run(self) -> Figures:
        started = time.monotonic()
        async with (
            FakeTelegram() as telegram,
            ChaoticFal() as fal_fake,
            ChaoticReplicate() as replicate_fake,
        ):
            for fake in (fal_fake, replicate_fake):
                fake.chaos = self.chaos
            fal_fake.script = FalScript(queue_ticks=1, run_ticks=1)
            replicate_fake.script = ReplicateScript(starting_ticks=1, processing_ticks=1)
            env = self.env(telegram, fal_fake, replicate_fake)
            upgrade = await self.spawn("upgrade", LIKENESS, "db", "upgrade", env=env)
            assert await upgrade.wait() == 0, (self.tmp / "upgrade.log").read_text()
            notifier = PgNotifier(
                self.postgres_url.replace("postgresql+asyncpg://", "postgresql://"), namespace=self.schema
            )
            await notifier.start()
            stop = asyncio.Event()
            try:
                people = await self.make_users(telegram)
                self.bot = await self.spawn("bot", LIKENESS, "run", env={**env, "LIKENESS_DISPATCH__CONCURRENCY": "0"})
                self.workers = [await self.start_worker(env) for _ in range(self.config.workers)]
                background = [
                    asyncio.ensure_future(self.feed(people, notifier, stop)),
                    asyncio.ensure_future(self.kill_loop(env, stop)),
                    asyncio.ensure_future(self.chat_bursts(telegram, stop)),
                    asyncio.ensure_future(self.chat_jobs(telegram)),
                    asyncio.ensure_future(self.block_some(telegram, stop)),
                ]
                try:
                    await self.until_settled(started)
                finally:
                    stop.set()
                    for task in background:
                        task.cancel()
                    for task in background:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    self.chaos.on = False
                    await self.stop_all()
                    self.figures.elapsed_s = time.monotonic() - started
                    rows = await self.measure(fal_fake, replicate_fake)
                await self.check(rows, telegram, fal_fake, replicate_fake)
            finally:
                await notifier.close()
                await self.db.dispose()
        return self.figures

    async def make_users(self, telegram: FakeTelegram) -> list[tuple[int, int]]:
        owners = []
        for index in range(self.config.users):
            person = telegram.user(f"soak{index}")
            telegram.private_chat(person)
            user = await self.db.write(
                users.ensure_user,
                platform="telegram",
                platform_user_id=str(person.id),
                now=time.time(),
                welcome_credits=WELCOME_CREDITS,
            )
            self.owners[user.id or 0] = person
            owners.append((user.id or 0, person.id))
        return owners

    async def feed(self, owners: list[tuple[int, int]], notifier: PgNotifier, stop: asyncio.Event) -> None:
        """Queue the ledger jobs as the bot does (submit, then NOTIFY), keeping a bounded queue ahead."""
        face = await self.blobs.put(face_photo())
        submitted = 0
        while submitted < self.config.jobs and not stop.is_set():
            if await self.db.read(_count, states=(JobState.QUEUED,)) >= self.config.queue_depth:
                await asyncio.sleep(0.2)
                continue
            for _ in range(min(25, self.config.jobs - submitted)):
                user_id, chat_id = owners[submitted % len(owners)]
                job_id = f"soak-job-{submitted:05d}"
                await self.db.write(
                    jobs.submit,
                    job=jobs.NewJob(
                        id=job_id,
                        user_id=user_id,
                        params={"prompt": f"a portrait of {job_id} in the rain", "num_images": 1},
                        cost=1,
                        face_keys=[face],
                        route=list(ROUTE),
                        reply_target={"platform": "telegram", "chat_id": chat_id},
                        deadline_s=600,
                    ),
                    now=time.time(),
                    daily_jobs_default=100_000,
                )
                submitted += 1
            await notifier.send(JOBS)

    async def chat_jobs(self, telegram: FakeTelegram) -> None:
        """A few jobs the way users make them: a photo with a caption, through the bot's front end."""
        for index in range(self.config.chat_jobs):
            person = telegram.user(f"chat{index}")
            chat = telegram.private_chat(person)
            self.chat_users.append(person)
            telegram.send_photo(person, chat, face_photo(), caption=f"a portrait of soak-chat-{index:05d}")
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))

    async def kill_loop(self, env: dict[str, str], stop: asyncio.Event) -> None:
        """SIGKILL a random worker that is running jobs every few seconds, and start another in its place. A
        worker that ended by itself is counted (its log says why; ``errors`` reports it) and replaced too."""
        low, high = self.config.kill_every_s
        while not stop.is_set():
            await asyncio.sleep(self.rng.uniform(low, high))
            for index, worker in enumerate(self.workers):
                if worker.process.returncode is not None:
                    self.figures.worker_exits += 1
                    self.workers[index] = await self.start_worker(env)
            busy = [i for i, worker in enumerate(self.workers) if worker.busy(self.tmp)]
            if not busy:
                continue
            index = self.rng.choice(busy)
            victim = self.workers[index]
            if victim.process.returncode is None:
                victim.process.send_signal(signal.SIGKILL)
                await victim.process.wait()
                self.figures.kills += 1
            self.workers[index] = await self.start_worker(env)

    async def chat_bursts(self, telegram: FakeTelegram, stop: asyncio.Event) -> None:
        """Bursts of 502s and 429s from the Bot API on the sends that carry results (photos; failure notices
        as text), until every job has ended. A burst is a number of failing calls: the next one on a method
        waits until the last is spent, so a lone retry never meets an outage that piled up while it waited."""
        low, high = self.config.chat_burst_every_s
        injected: Counter[str] = Counter()
        while not stop.is_set() and not self.rendered:
            await asyncio.sleep(self.rng.uniform(low, high))
            method, most = self.rng.choice((("sendPhoto", 8), ("sendPhoto", 8), ("sendMessage", 3)))
            # Only the bursts answer 429 or 502 (a call's status is set once it is answered, so all are read).
            spent = sum(1 for call in telegram.calls if call.method == method and call.status in (429, 502))
            if spent < injected[method]:
                continue
            times = self.rng.randint(1, most)
            if self.rng.random() < 0.5:
                telegram.fail_next(method, times, error_code=502, description="Bad Gateway")
            else:
                telegram.rate_limit(method, times, retry_after=self.rng.randint(1, 2))
            injected[method] += times
            self.figures.chat_bursts += 1

    async def block_some(self, telegram: FakeTelegram, stop: asyncio.Event) -> None:
        """Some users block the bot a third of the way in."""
        ended = (JobState.SUCCEEDED, JobState.FAILED)
        while True:  # the ledger is in another process: nothing to wait on but the count itself
            if await self.db.read(_count, states=ended) >= self.config.jobs // 3:
                break
            await asyncio.sleep(0.5)
        for user_id in list(self.owners)[: self.config.blocked_users]:
            telegram.block(self.owners[user_id])
            self.blocked.add(user_id)

    async def until_settled(self, started: float) -> None:
        """Until every job has ended and its delivery too (delivered or undeliverable)."""
        total = self.config.jobs + self.config.chat_jobs
        while True:
            if not self.rendered and await self.db.read(_count, states=tuple(JobState)) >= total:
                self.rendered = await self.db.read(_count, states=(JobState.QUEUED, JobState.RUNNING)) == 0
            settled = await self.db.read(_delivery_ended)
            if settled >= total:
                return
            if time.monotonic() - started > self.config.within_s:
                states = await self.db.read(_by_state)
                raise TimeoutError(f"only {settled} of {total} jobs settled; states {states}; logs in {self.tmp}")
            await asyncio.sleep(0.5)

    # -- the checks --------------------------------------------------------------------------------------

    async def measure(self, fal_fake: ChaoticFal, replicate_fake: ChaoticReplicate) -> list[dict[str, Any]]:
        """The figures, read once every process has stopped; returns the jobs' rows for the checks."""
        rows = await self.db.read(_all_jobs)
        figures = self.figures
        figures.jobs = len(rows)
        figures.by_state = dict(Counter(str(row["state"]) for row in rows))
        figures.by_error = dict(Counter(str(row["error"]) for row in rows if row["state"] == JobState.FAILED))
        figures.resumed_jobs = sum(row["attempt"] > 1 for row in rows)
        figures.interrupted_submits = sum(
            "stopped before storing its answer" in (row["error_detail"] or "") for row in rows
        )
        figures.deliveries = sum(row["delivery_state"] == DeliveryState.DELIVERED for row in rows)
        figures.undeliverable = sum(row["delivery_state"] == DeliveryState.UNDELIVERABLE for row in rows)
        figures.refunds = await self.db.read(_ledger_count, kind=LedgerKind.REFUND)
        figures.provider_faults = sum(self.chaos.faults.values())
        submits = self.chaos.submits
        figures.submits = len(submits)
        figures.refused_submits = sum(s.action in REFUSALS for s in submits)
        figures.unanswered_submits = sum(s.action is Action.HANG for s in submits)
        figures.accepted = sum((fal_fake.accepted_tokens() + replicate_fake.accepted_tokens()).values())
        return rows

    async def check(
        self, rows: list[dict[str, Any]], telegram: FakeTelegram, fal_fake: ChaoticFal, replicate_fake: ChaoticReplicate
    ) -> None:
        """Every invariant of the soak."""
        figures = self.figures
        by_token = {_token(str(row["params"].get("prompt", ""))): row for row in rows}
        by_id = {str(row["id"]): row for row in rows}
        submits = self.chaos.submits
        accepted = fal_fake.accepted_tokens() + replicate_fake.accepted_tokens()

        # 1. Every job ended; the jobs from chat are all there.
        assert figures.jobs == self.config.jobs + self.config.chat_jobs, figures.jobs
        assert all(JobState(row["state"]).terminal for row in rows), figures.by_state
        assert "" not in by_token and len(by_token) == len(rows)

        # 2. Provider submits: each job's submits are its refused ones (retried, as documented) plus at most one
        #    the provider took; nothing after a submit whose answer never came; a succeeded job was taken once.
        per_job: dict[str, list[Submit]] = defaultdict(list)
        for submit in submits:
            per_job[submit.token].append(submit)
        assert set(per_job) <= set(by_token), set(per_job) - set(by_token)
        assert set(accepted) <= set(by_token), set(accepted) - set(by_token)
        twice = {
            token: (count, by_token[token]["attempt"], [(s.provider, str(s.action)) for s in per_job[token]])
            for token, count in accepted.items()
            if count > 1
        }
        assert not twice, f"jobs accepted by providers more than once (accepted, attempts, submits): {twice}"
        assert figures.submits == figures.accepted + figures.refused_submits + figures.unanswered_submits
        for token, row in by_token.items():
            seen = per_job.get(token, [])
            refused = sum(s.action in REFUSALS for s in seen)
            unanswered = sum(s.action is Action.HANG for s in seen)
            assert len(seen) == accepted[token] + refused + unanswered, (token, seen, accepted[token])
            if row["state"] == JobState.SUCCEEDED:
                assert accepted[token] == 1, (token, seen)
            unknown = [i for i, s in enumerate(seen) if s.action in (Action.HANG, Action.LOST_ANSWER, Action.MALFORMED)]
            if unknown:
                assert unknown[0] == len(seen) - 1, f"{token}: submitted again after an unknown outcome: {seen}"
                assert row["state"] == JobState.FAILED, (token, row["state"], seen)

        # 3. Delivery: every result went out exactly once, or was refunded as undeliverable (blocked users).
        #    A result's photo carries its job's id in the data of its buttons (Reroll, Vary).
        sent: Counter[str] = Counter()
        for message in telegram.all_messages():
            if message.photo is not None:
                sent.update({job_id for job_id in _button_arguments(message.reply_markup) if job_id in by_id})
        for row in rows:
            job_id = str(row["id"])
            if row["delivery_state"] == DeliveryState.UNDELIVERABLE:
                assert row["user_id"] in self.blocked, (job_id, "undeliverable for a user who never blocked the bot")
                assert sent[job_id] == 0, job_id
            else:
                assert row["delivery_state"] == DeliveryState.DELIVERED, (job_id, row["delivery_state"])
                if row["state"] == JobState.SUCCEEDED:
                    assert sent[job_id] == 1, (job_id, sent[job_id])
        # A failed job's notice carries no job id: each user's chat holds one per failed job delivered there.
        notices = Counter(m.chat_id for m in telegram.all_messages() if m.photo is None and not m.deleted)
        failed: Counter[int] = Counter()
        for row in rows:
            if row["state"] != JobState.SUCCEEDED and row["delivery_state"] == DeliveryState.DELIVERED:
                failed[row["user_id"]] += 1
        for user_id, person in self.owners.items():
            assert notices[person.id] == failed[user_id], (user_id, notices[person.id], failed[user_id])

        # 4. Credits: the books balance, nothing reserved, each user charged for what reached them.
        assert await self.db.read(reconcile.find_drift) == []
        charged: Counter[int] = Counter()
        for row in rows:
            if row["state"] == JobState.SUCCEEDED and row["delivery_state"] == DeliveryState.DELIVERED:
                charged[row["user_id"]] += row["cost"]
        for user_id in self.owners:
            user = await self.db.read(users.get_user, user_id=user_id)
            assert user is not None
            assert (user.credits, user.reserved, user.running) == (WELCOME_CREDITS - charged[user_id], 0, 0), user_id

        # 5. Blobs: after the orphan sweep, every stored blob is referenced, and every referenced one is there.
        figures.orphans_swept = await sweep_orphans(self.db, self.blobs, now=time.time() + 1, grace_s=0)
        stored = [key async for batch in self.blobs.stored_before(time.time() + 1) for key in batch]
        assert await self.db.read(blob_refs.unreferenced, keys=stored) == []
        for row in rows:
            if row["state"] == JobState.SUCCEEDED:
                for image in await self.db.read(jobs.images_of, job_id=str(row["id"])):
                    assert await self.blobs.get(image.blob_key)

    def errors(self) -> list[str]:
        """Errors our own code logged, other than those the faults are meant to cause, and anything a process
        wrote that is not a log record (a crash's traceback)."""
        found = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    if "Traceback" in line or "Error" in line:
                        found.append(f"{log.name}: {line[:2000]}")
                    continue
                ours = str(record.get("logger", "")).startswith(("bot", "engine", "storage"))
                if not ours or record.get("level") not in ("ERROR", "CRITICAL"):
                    continue
                text = f"{record.get('message')} {record.get('exception', '')}"
                if not any(pattern.match(text) for pattern in EXPECTED):
                    found.append(f"{log.name}: {line[:3000]}")
        return found


def _count(*, session: Connection, states: tuple[JobState, ...]) -> int:
    j = tables.jobs.c
    query = select(func.count()).select_from(tables.jobs).where(j.state.in_([s.value for s in states]))
    return int(session.execute(query).scalar_one())


def _delivery_ended(*, session: Connection) -> int:
    j = tables.jobs.c
    ended = (DeliveryState.DELIVERED.value, DeliveryState.UNDELIVERABLE.value)
    query = select(func.count()).select_from(tables.jobs).where(j.delivery_state.in_(ended))
    return int(session.execute(query).scalar_one())


def _by_state(*, session: Connection) -> dict[str, int]:
    j = tables.jobs.c
    query = select(j.state, j.delivery_state, func.count()).group_by(j.state, j.delivery_state)
    return {f"{state}/{delivery}": int(n) for state, delivery, n in session.execute(query)}


def _all_jobs(*, session: Connection) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in session.execute(select(tables.jobs))]


def _ledger_count(*, session: Connection, kind: LedgerKind) -> int:
    led = tables.ledger.c
    return int(
        session.execute(select(func.count()).select_from(tables.ledger).where(led.kind == kind.value)).scalar_one()
    )


@contextlib.asynccontextmanager
async def private_schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"soak_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


async def soak(config: SoakConfig, postgres_url: str, tmp: Path, report: Callable[[str], object] = print) -> Figures:
    """Run one soak in a private schema and return its figures (printed through ``report`` as well)."""
    async with private_schema(postgres_url) as schema:
        run = Soak(config, postgres_url, schema, tmp)
        try:
            figures = await run.run()
        finally:
            for line in run.figures.lines():
                report(line)
            problems = run.errors()
            for problem in problems[:10]:
                report(problem)
        assert not problems, f"{len(problems)} unexpected errors logged (the first ones are above)"
        return figures
