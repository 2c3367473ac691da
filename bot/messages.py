"""Every string a user or an admin reads, in one place.

Texts for chat users are English sources translated through the catalogs in ``bot/locales`` into the
language of the user being answered (``bot.i18n``): functions translate with ``_`` and ``ngettext`` when
called, and a fixed text marked with ``N_`` is translated each time it is read as ``messages.NAME``. Texts
for admins and operators (admin commands, the CLI, logs) stay English. After adding or changing a text, run
``scripts/i18n.sh`` and translate what it adds to every catalog (tests/bot/test_translations.py checks).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

from bot import i18n
from bot.i18n import gettext as _
from bot.i18n import ngettext
from engine.capabilities import Choice, Problem, Range, Text
from engine.changes import Change, ChangeKind
from engine.events import JobProgress, ProgressKind
from engine.judge import Refusal as FaceRefusal
from engine.judge import RefusalReason as FaceReason
from storage.errors import QuotaRefused, RefusalReason
from storage.stats import Stats
from storage.workers import WorkerInfo


class _Source(str):
    """A fixed text marked for translation: read through the module, it comes back translated."""


def N_(text: str) -> str:  # gettext's own name for "translate when read", known to pybabel
    return _Source(text)


def NC_(context: str, text: str) -> str:  # N_ with a context: the same words can be translated apart
    return text


class _Translated(types.ModuleType):
    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        return str(_(value)) if type(value) is _Source else value


sys.modules[__name__].__class__ = _Translated


# --- admin -------------------------------------------------------------------------------------
NOT_ADMIN = N_("Only bot admins can do that.")
NOT_SERVER_MANAGER = N_("Only this server's managers (Manage Server) or bot admins can do that.")
ADMIN_USAGE = (
    "Admin commands:\n"
    "/admin grant <user> <credits>\n"
    "/admin limit <user|default> <jobs per day>\n"
    "/admin ban <user> [reason] · /admin unban <user>\n"
    "/admin stats\n"
    "/admin pause [reason] · /admin resume\n"
    "/admin safety [block|spoiler|allow|default]\n"
    "/admin refund <charge id> [force]\n"
    "/admin images [images per day|off] (in a server or group)"
)
BAD_USER_REF = "Name a user as <platform>:<id> (telegram or discord), or a bare id on this platform."
BAD_NUMBER = "{what} must be a whole number, got {value!r}."


def granted(user: str, amount: int, balance: int) -> str:
    verb = "Granted" if amount >= 0 else "Took"
    return f"{verb} {abs(amount)} credits {'to' if amount >= 0 else 'from'} {user}; balance now {balance}."


def take_away_refused(user: str, available: int) -> str:
    return (
        f"Not taken: {user} has {available} credits free (the rest is held for jobs in progress). "
        f"Take away at most {available}."
    )


def limit_set(target: str, jobs: int) -> str:
    who = "the default" if target == "default" else target
    return f"Daily job limit for {who} set to {jobs}."


def banned(user: str) -> str:
    return f"{user} is banned."


def unbanned(user: str) -> str:
    return f"{user} is no longer banned."


def paused(reason: str) -> str:
    return f"Paused new jobs{': ' + reason if reason else ''}."


RESUMED = "New jobs are accepted again."


def stats_text(stats: Stats) -> str:
    rate = "n/a" if stats.success_rate is None else f"{stats.success_rate:.0%}"
    states = ", ".join(f"{state} {count}" for state, count in sorted(stats.by_state.items())) or "none"
    spend = ", ".join(f"{backend} ${usd:.4f}" for backend, usd in sorted(stats.spend_by_backend.items())) or "none"
    likeness = (
        ", ".join(
            f"{backend} {mean:.0%} over {count}" + (f" ({retries} re-rendered)" if retries else "")
            for backend, (count, mean) in sorted(stats.likeness_by_backend.items())
            for retries in [stats.likeness_retries.get(backend, 0)]
        )
        or "none scored"
    )
    return (
        f"Jobs today: {stats.total} ({states})\n"
        f"Success rate: {rate}\n"
        f"Spend per backend: {spend}\n"
        f"Likeness per backend: {likeness}\n"
        f"Queue depth: {stats.queue_depth} queued, {stats.running} running\n"
        f"Users: {stats.users}"
    )


def workers_text(workers: list[WorkerInfo], now: float) -> str:
    """The live workers for ``admin stats``: what each serves now (free slots), its GPU, when last heard."""
    if not workers:
        return "Workers: none up (jobs wait for one)"
    lines = [f"Workers: {len(workers)}"]
    for worker in workers:
        serves = ", ".join(f"{name} ({free} free)" for name, free in sorted(worker.backends.items())) or "nothing"
        gpu = f", GPU {worker.gpu_name} {worker.gpu_memory_mb} MiB" if worker.gpu_name else ""
        state = " draining" if worker.draining else ""
        lines.append(
            f"• {worker.host} pid {worker.pid} v{worker.version}{state}: {serves}{gpu}; "
            f"seen {max(0.0, now - worker.last_seen):.0f}s ago"
        )
    return "\n".join(lines)


# --- quota ---------------------------------------------------------------------------------------
def credit_count(count: int) -> str:
    """An amount of credits in words: "1 credit", "2 кредита", "5 кредитов"."""
    return ngettext("{count} credit", "{count} credits", count).format(count=count)


def refusal(refused: QuotaRefused) -> str:
    if refused.reason is RefusalReason.BANNED:
        return _("You can't use this bot.")
    if refused.reason is RefusalReason.NO_CREDITS:
        return _("Not enough credits: this needs {needed}, you have {available}. Ask an admin for more.").format(
            needed=refused.needed, available=max(refused.available, 0)
        )
    if refused.reason is RefusalReason.DAILY_LIMIT:
        if refused.limit <= 0:
            return _("New jobs are switched off for you: your daily limit is 0 jobs.")
        return ngettext(
            "You've reached today's limit of {limit} job. It resets at midnight UTC.",
            "You've reached today's limit of {limit} jobs. It resets at midnight UTC.",
            refused.limit,
        ).format(limit=refused.limit)
    return _("Something is off with your account; try /start.")


# --- photos ------------------------------------------------------------------------------------
PHOTO_TOO_LARGE = N_("That file is too large: send a photo under {mb} MB.")
PHOTO_NOT_IMAGE = N_("That isn't a photo I can read: send a JPEG, PNG or WebP image.")
PHOTO_EMPTY = N_("That file is empty: send a photo of the face (JPEG, PNG or WebP).")
PHOTO_ANIMATED = N_("Animated images aren't accepted: send a still photo of the face (JPEG, PNG or WebP).")


def photo_kind_refused(kind: str) -> str:
    """A file of a kind intake recognises but does not take (GIF, TIFF, SVG, HEIC…)."""
    if kind in ("GIF", "SVG", "PDF"):
        return _("{kind} files aren't accepted: send a photo of the face as JPEG, PNG or WebP.").format(kind=kind)
    return _("{kind} images aren't accepted: send the photo as JPEG, PNG or WebP (or as a photo, not a file).").format(
        kind=kind
    )


def photo_too_many_pixels(width: int, height: int, megapixels: int) -> str:
    return _(
        "That image has too many pixels ({width}×{height}): send a photo of at most {megapixels} megapixels."
    ).format(width=width, height=height, megapixels=megapixels)


def photo_too_big_to_open(kind: str, width: int, height: int) -> str:
    return _(
        "That {kind} has too many pixels to open safely ({width}×{height}): send a smaller one, or the photo as a JPEG."
    ).format(kind=kind, width=width, height=height)


def photo_too_narrow(width: int, height: int, ratio: int) -> str:
    return _(
        "That image is too long and thin ({width}×{height}): crop it closer to the face, to at most {ratio}:1."
    ).format(width=width, height=height, ratio=ratio)


PHOTO_DAMAGED = N_("That image is damaged or incomplete: please send it again.")
PHOTO_TOO_SMALL = N_("That photo is too small ({w}×{h}): the face needs at least {side} px on the short side.")

# --- parameters ----------------------------------------------------------------------------------
# Parameter names as users read them (English here; the functions below translate them).
PARAMETER_NAMES = {
    "prompt": N_("prompt"),
    "width": N_("width"),
    "height": N_("height"),
    "steps": N_("steps"),
    "guidance": N_("guidance"),
    "id_weight": N_("id weight"),
    "start_step": N_("start step"),
    "true_cfg": N_("true CFG"),
    "seed": N_("seed"),
    "num_images": N_("number of images"),
    "output_format": N_("format"),
    "negative_prompt": N_("negative prompt"),
    "max_sequence_length": N_("max sequence length"),
    "output_quality": N_("quality"),
    "safety_checker": N_("safety checker"),
    "mode": N_("mode"),
    "style": N_("style"),
}


def _allowed(problem: Problem) -> str:
    limit = problem.allowed
    if limit is None:
        return _("not supported there")
    if isinstance(limit, Range):
        low = int(limit.low) if limit.integer else limit.low
        high = int(limit.high) if limit.integer else limit.high
        return _("allowed {low}–{high}").format(low=low, high=high)
    if isinstance(limit, Text):
        return ngettext("at most {count} character", "at most {count} characters", limit.max_length).format(
            count=limit.max_length
        )
    assert isinstance(limit, Choice)
    return _("allowed {options}").format(options=", ".join(str(option) for option in limit.options))


MAX_PROMPT = 1000
EMPTY_PROMPT = N_("Write what to render, e.g. /imagine a portrait in the rain --ar 3:4")
PROMPT_TOO_LONG = N_("That prompt is too long: keep it under {limit} characters.")
BAD_OPTION = N_("{flag} {value!r} is not valid: expected {expected}.")
UNKNOWN_OPTION = N_("Unknown option {flag}. Options: {known}, --no <things to avoid>.")
MISSING_VALUE = N_("{flag} needs a value.")
# What an option expects, as BAD_OPTION says it (bot/service/options.py names them in English).
EXPECTED = (
    N_("a whole number"),
    N_("a number"),
    N_("a finite number"),
    N_("jpeg, png or webp"),
    N_("fidelity or extreme-style"),
)


def expected(what: str) -> str:
    return _(what)


BAD_ASPECT = N_("Aspect {value!r} is not a ratio like 3:4 (between 1:4 and 4:1).")


def parameter_name(name: str) -> str:
    """A parameter (``id_weight``) or its English name (``id weight``) as the reader calls it."""
    return _(PARAMETER_NAMES.get(name, name))


def text_too_long(what: str, limit: int) -> str:
    return _("That {what} is too long: keep it under {limit} characters.").format(what=_(what), limit=limit)


def hidden_characters(what: str, codepoint: str) -> str:
    return _("That {what} holds an invisible control character ({codepoint}): remove it and send it again.").format(
        what=_(what), codepoint=codepoint
    )


def prompt_mentions(what: str, mention: str) -> str:
    return _("A {what} can't mention anyone ({mention}): describe the scene without the @.").format(
        what=_(what), mention=mention
    )


def no_backend(found: tuple[Problem, ...] | list[Problem]) -> str:
    """Why nothing can render a request: each broken range with what is allowed, or that none is up."""
    if not found:
        return _("No image backend is available right now. Please try again later.")
    lines = [
        _("• {parameter} {value!r} on {backend}: {allowed}").format(
            parameter=parameter_name(p.parameter), value=p.value, backend=p.backend, allowed=_allowed(p)
        )
        for p in found
    ]
    return _("No backend can take these settings:") + "\n" + "\n".join(lines)


# --- users -----------------------------------------------------------------------------------------
def welcome(available: int) -> str:
    return _(
        "Hi! Send me a face photo with a caption describing a scene, and I'll render you in it.\n"
        "You have {credits}. /help lists everything I can do.\n\n"
        "Privacy: your photos are used only to render your images, kept for a limited time, and "
        "deleted with /forget whenever you like. Only send photos of yourself or of people who agreed."
    ).format(credits=credit_count(available))


HELP = N_(
    "How to use me:\n"
    "• Send a photo with a caption: the caption is the prompt.\n"
    "• /imagine <prompt> renders with your saved face.\n"
    "• Options: --ar 3:4, --seed 42, --steps 20, --id-weight 0.9, --guidance 4, --n 2, --no <things to avoid>\n"
    "• --style NAME applies a preset (/styles lists them); --strict refuses rather than render anything other "
    "than asked; --mode fidelity|extreme-style (SDXL)\n"
    "• /face save <name> (with or replying to up to 4 photos), /face list, /face use <name>, "
    "/face delete <name>, /face delete-all\n"
    "• /history (re-run or open a job), /quota, /cancel, /forget, /privacy, /language\n"
    "• /buy credits · /terms · /paysupport"
)
NOT_THIS_CHANNEL = N_("I don't take requests in this channel.")


def language_now(name: str, *, chosen: bool) -> str:
    """/language: the language in use and where it comes from."""
    if chosen:
        return _("I answer you in {language}, as you chose. Pick another one below:").format(language=name)
    return _("I answer you in {language}, your app's language. Pick another one below:").format(language=name)


def language_chosen(name: str) -> str:
    return _("From now on I answer you in {language}.").format(language=name)


def language_follows_platform(name: str) -> str:
    return _("I follow your app's language again: {language} for now.").format(language=name)


def unknown_language(value: str, known: str) -> str:
    return _("I can't answer in {value!r} yet. Languages: {known}.").format(value=value, known=known)


LANGUAGE_AUTO = N_("Same as my app")


# The shipped style presets' descriptions (bot/styles.py); an operator's own presets are shown as written.
STYLE_DESCRIPTIONS = {
    "cinematic": N_("Film still: dramatic light, shallow depth of field"),
    "anime": N_("Anime illustration with clean lines and bright colours"),
    "oil-painting": N_("Classical oil portrait with visible brush strokes"),
    "pixel-art": N_("Retro 16-bit pixel art"),
    "studio-portrait": N_("Professional studio photo on a plain backdrop"),
}


def style_description(description: str) -> str:
    return _(description) if description else ""


def styles_list(styles: list[tuple[str, str]]) -> str:
    """/styles: each preset with its description, and how to use one."""
    if not styles:
        return _("There are no style presets.")
    lines = [f"• {name} — {description}" if description else f"• {name}" for name, description in styles]
    usage = _("Add --style NAME to a prompt, e.g. /imagine me on a rooftop --style {example}")
    return _("Style presets:") + "\n" + "\n".join(lines) + "\n" + usage.format(example=styles[0][0])


def unknown_style(name: str, known: str) -> str:
    return _("There is no style called {name!r}. Styles: {known}.").format(name=name, known=known)


def paused_for_users(reason: str) -> str:
    if reason:
        return _("New requests are paused right now: {reason}").format(reason=reason)
    return _("New requests are paused right now.")


# --- imagine ---------------------------------------------------------------------------------------
TOO_MANY_PHOTOS = N_("Send at most {limit} photos of one face.")
NO_SUCH_FACE = N_("You have no saved face called {name!r}. /face list shows yours.")
NO_FACE_YET = N_("Send a face photo with your prompt, or save one first with /face save <name>.")
NO_BACKEND_UP = N_("No image backend is available right now. Please try again later.")
STARTED = N_("Rendering…")
NOT_YOUR_JOB = N_("That isn't one of your jobs.")
JOB_EXPIRED = N_("That job's photos have expired: send the photo again.")
NOTHING_TO_CANCEL = N_("You have nothing queued or rendering.")
CANCELLED_REFUNDED = N_("Cancelled. Your credits were refunded.")


def ordinal(number: int) -> str:
    """A place in line as the reader writes it: "3rd", "3-й", "3.", "3.º"."""
    if i18n.current() == i18n.SOURCE:
        suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
        return f"{number}{suffix}"
    # Translators: an ordinal number, a place in a queue ("3rd" in English).
    return _("{number}th").format(number=number)


def about(seconds: float) -> str:
    """A rough duration: "about 40 s", "about 3 min"."""
    if seconds < 60:
        return _("about {seconds} s").format(seconds=max(5, round(seconds / 5) * 5))
    return _("about {minutes} min").format(minutes=max(1, round(seconds / 60)))


def queued(position: int | None, eta_s: float | None = None) -> str:
    """The status of a queued job: its place in line and, where known, about when it will be ready."""
    if not position:
        return _("Queued.")
    if eta_s is None:
        return _("Queued — {place} in line.").format(place=ordinal(position))
    return _("Queued — {place} in line, ready in {eta}.").format(place=ordinal(position), eta=about(eta_s))


def waiting_for_worker(position: int | None) -> str:
    return (
        queued(position)
        + " "
        + _(
            "No renderer is up right now: your job waits for one and starts as soon as one is back "
            "(you are not charged if it never starts)."
        )
    )


def change_note(change: Change) -> str:
    """One line in a job's status: what rendering it changes of what was asked."""
    if change.kind is ChangeKind.FAMILY:
        return _("Note: rendered with {given} on {backend}, as {asked} can't take this {parameter}.").format(
            given=change.given, backend=change.backend, asked=change.asked, parameter=parameter_name(change.reason)
        )
    if change.kind is ChangeKind.FACES:
        count = int(change.asked)
        return ngettext(
            "Note: {backend} uses {given} of the face's {count} photo.",
            "Note: {backend} uses {given} of the face's {count} photos.",
            count,
        ).format(backend=change.backend, given=change.given, count=count)
    return _("Note: the size becomes {given} instead of {asked}, the range {backend} renders.").format(
        given=change.given.replace("x", "×"), asked=change.asked.replace("x", "×"), backend=change.backend
    )


def failover_note(backend: str, model: str) -> str:
    """A failover to a backend of another model than the job was queued for."""
    return _("Note: {backend} took over, so this renders with {model}.").format(backend=backend, model=model)


def strict_refused(changes: Sequence[Change]) -> str:
    """--strict: what would have changed, instead of rendering it changed."""
    parts = []
    for change in changes:
        if change.kind is ChangeKind.FACES:
            parts.append(
                _("{given} of {asked} photos on {backend}").format(
                    given=change.given, asked=change.asked, backend=change.backend
                )
            )
        else:
            given, asked = change.given.replace("x", "×"), change.asked.replace("x", "×")
            parts.append(
                _("{given} instead of {asked} on {backend}").format(given=given, asked=asked, backend=change.backend)
            )
    return _(
        "Not queued (--strict): no backend here renders it exactly as asked ({changes}). "
        "Without --strict it renders with that change, and the status says so."
    ).format(changes="; ".join(parts))


def cancel_outcome(outcome: str) -> str:
    if outcome == "cancelled":
        return _("Cancelled. Your credits were refunded.")
    if outcome == "requested":
        return _("Cancelling… you won't be charged.")
    return _("That job has already finished.")


def rendering_on(backend: str) -> str:
    return _("Rendering on {backend}…").format(backend=backend)


def provider_queue(backend: str, position: int | None) -> str:
    if position is None:
        return _("Waiting at {backend}…").format(backend=backend)
    return _("Waiting at {backend} — position {position}…").format(backend=backend, position=position)


def rendering_fraction(backend: str, fraction: float) -> str:
    return _("Rendering on {backend}… {fraction:.0%}").format(backend=backend, fraction=fraction)


def status_progress(event: JobProgress) -> str | None:
    """A running job's status message for a progress event; None for events a user need not see."""
    if event.kind is ProgressKind.BACKEND:
        return rendering_on(event.backend or "")
    if event.kind is ProgressKind.PROVIDER_QUEUE:
        return provider_queue(event.backend or "", event.position)
    if event.kind is ProgressKind.RENDERING and event.fraction is not None:
        return rendering_fraction(event.backend or "", event.fraction)
    if event.kind is ProgressKind.LIKENESS_RETRY:
        return _(LIKENESS_RETRY)
    return None


LIKENESS_RETRY = N_("That one didn't look enough like the face: rendering once more, free…")


def likeness_text(scores: list[float | None] | tuple[float | None, ...]) -> str:
    """The likeness shown with a result ("likeness 86%"); empty when no image was scored."""
    shown = [(_("no face found") if score <= 0 else f"{round(score * 100)}%") for score in scores if score is not None]
    return _("likeness {scores}").format(scores=", ".join(shown)) if shown else ""


def result_caption(job: Any, scores: list[float | None] | tuple[float | None, ...] = ()) -> str:
    prompt = str(job.params.get("prompt", ""))
    short = prompt if len(prompt) <= 200 else prompt[:199] + "…"
    seed = " · " + _("seed {seed}").format(seed=job.seed) if job.seed else ""
    likeness = likeness_text(scores)
    return f"{short}{seed} · {job.backend}" + (f" · {likeness}" if likeness else "")


# Why a job failed, by its error, as its user reads it (failure() translates).
FAILURES = {
    "content_policy": N_("The image service refused this prompt or photo. Try different wording."),
    "no_face": N_("I couldn't find a clear face in that photo. Try a sharper, front-facing one."),
    "invalid_input": N_("The image service couldn't use that photo or those settings."),
    "deadline": N_("That took too long and was stopped."),
    "no_backend": N_("No image backend could take that request right now."),
    "unknown_outcome": N_("The image service stopped answering mid-request."),
    "photo_missing": N_("Your photo is no longer stored: please send it again."),
    "unsafe_output": N_("The result was flagged as unsafe by the safety check, so it was not sent."),
}


def failure(reason: str, cost: int) -> str:
    text = _(FAILURES.get(reason, N_("Something went wrong while rendering.")))
    if not cost:
        return text + " " + _("You were not charged.")
    return text + " " + _("You were not charged ({credits} refunded).").format(credits=credit_count(cost))


# --- identities ------------------------------------------------------------------------------------
BAD_FACE_NAME = N_("Face names use letters, digits, - and _, up to 32 characters.")
FACE_NEEDS_PHOTOS = N_("Send /face save <name> with a photo (or up to 4), or reply to photos with it.")


def face_cap(limit: int) -> str:
    return ngettext(
        "You can keep at most {limit} face. Delete one with /face delete <name>.",
        "You can keep at most {limit} faces. Delete one with /face delete <name>.",
        limit,
    ).format(limit=limit)


FACE_DEFAULT = N_("{name!r} is now your default face.")


def face_saved(name: str, photos: int) -> str:
    return ngettext(
        "Saved face {name!r} ({count} photo); it is now your default.",
        "Saved face {name!r} ({count} photos); it is now your default.",
        photos,
    ).format(name=name, count=photos)


def face_list(faces: list[tuple[str, int, bool]]) -> str:
    if not faces:
        return _("You have no saved faces. Use /face save <name> with a photo.")
    lines = [
        "• "
        + ngettext("{name} ({count} photo)", "{name} ({count} photos)", count).format(name=name, count=count)
        + (" — " + _("default") if default else "")
        for name, count, default in faces
    ]
    return _("Your faces:") + "\n" + "\n".join(lines)


def faces_deleted(count: int) -> str:
    if count == 0:
        return _("No faces to delete.")
    return ngettext("Deleted {count} face.", "Deleted {count} faces.", count).format(count=count)


# --- history, quota, forget ------------------------------------------------------------------------
NO_HISTORY = N_("You haven't rendered anything yet.")


NOT_DELIVERED = N_("could not be delivered (refunded)")
# A job's state as its history line shows it.
STATE_NAMES = {
    "pending": N_("awaiting confirmation"),
    "queued": N_("queued"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
}


def history_line(date: str, job: Any, number: int | None = None) -> str:
    """One job of /history; numbered where the page's buttons refer to its entries by number."""
    prompt = str(job.params.get("prompt", ""))
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    seed = job.seed or job.params.get("seed") or _("random")
    outcome = _("expired") if job.expired else _(STATE_NAMES.get(str(job.state), str(job.state)))
    if job.state == "failed" and job.error:
        outcome += f" ({job.error})"
    if job.state == "succeeded" and job.delivery_state == "undeliverable":
        outcome += ", " + _(NOT_DELIVERED)
    backend = job.backend or _("not started")
    bullet = f"{number}." if number is not None else "•"
    return f"{bullet} {date} — {prompt}\n  " + _("seed {seed}").format(seed=seed) + f" · {backend} · {outcome}"


def history_entry(number: int, job: Any) -> str:
    """A job as the history menu lists it: its number and prompt, within Discord's 100 characters."""
    prompt = str(job.params.get("prompt", ""))
    text = f"{number}. {prompt}"
    return text if len(text) <= 100 else text[:99] + "…"


def rerun_numbered(number: int) -> str:
    return _("↻ Re-run {number}").format(number=number)


def open_numbered(number: int) -> str:
    return _("🖼 Open {number}").format(number=number)


RERUN_BUTTON = N_("↻ Re-run")
HISTORY_PICK = N_("Open a job to see it again or re-run it…")


def history_page(lines: list[str], page: int, pages: int) -> str:
    return _("Your jobs (page {page} of {pages}):").format(page=page, pages=pages) + "\n" + "\n".join(lines)


def quota_text(
    *, available: int, reserved: int, used_today: int, daily_limit: int, per_image: int, unlimited: bool
) -> str:
    if unlimited:
        return _("You have no limits.")
    held = " " + _("({reserved} held for jobs in progress)").format(reserved=reserved) if reserved else ""
    return (
        _("Credits: {available}").format(available=available)
        + held
        + "\n"
        + _("Jobs today: {used} of {limit} (resets at midnight UTC)").format(used=used_today, limit=daily_limit)
        + "\n"
        + _("One image costs {credits}.").format(credits=credit_count(per_image))
    )


FORGET_CONFIRM = N_(
    "This deletes your saved faces, your photos and your history for good. Your credit balance stays. Are you sure?"
)
FORGET_KEPT = N_("Nothing was deleted.")
FORGET_BUSY = N_("You have a job in progress: wait for it to finish (or /cancel it), then try again.")


def forgotten(*, identities: int, photos: int, embeddings: int, results: int, history: int) -> str:
    """The receipt of /forget: how many of each thing were deleted."""

    deleted = (
        ngettext("{count} saved face", "{count} saved faces", identities).format(count=identities),
        ngettext("{count} photo", "{count} photos", photos).format(count=photos),
        ngettext("{count} face signature", "{count} face signatures", embeddings).format(count=embeddings),
        ngettext("{count} result", "{count} results", results).format(count=results),
        ngettext("{count} history entry", "{count} history entries", history).format(count=history),
    )
    return _("Done. Deleted for good: {deleted}. Your credit balance stays.").format(deleted=", ".join(deleted))


# --- privacy and the face checks -------------------------------------------------------------------
PRIVACY_AGREE = N_("I agree: this is me or I have their consent")


def privacy_notice(retention_days: float) -> str:
    """What is kept of a face, for how long, who sees it and how to delete it: shown before the first photo."""
    if retention_days > 0:
        kept = ngettext("for {days:g} day", "for {days:g} days", max(1, round(retention_days))).format(
            days=retention_days
        )
    else:
        kept = _("until you delete them")
    return _(
        "Before I use a face photo, please read this:\n"
        "• What I keep: the photos you send, a face signature computed from each (biometric data, used to "
        "check photos and to score how much results look like the face), your prompts and the images I render.\n"
        "• For how long: the photos, signatures and images of your renders {kept}; saved faces until you "
        "delete them.\n"
        "• Who sees them: you and the bot's operator. Photos go to the image service that renders them, "
        "and to no one else.\n"
        "• How to delete: /face delete <name> removes a saved face; /forget deletes everything at once.\n"
        "Only send photos of yourself, or of someone who has agreed to it. /privacy shows this again."
    ).format(kept=kept)


def privacy_needed(retention_days: float) -> str:
    return privacy_notice(retention_days) + "\n\n" + _("Nothing was stored: agree below, then send the photo again.")


def privacy_accepted(date: str) -> str:
    return _("Thank you: your agreement is recorded ({date} UTC). Send the photo again to go on.").format(date=date)


def privacy_agreed_on(retention_days: float, date: str) -> str:
    return privacy_notice(retention_days) + "\n\n" + _("You agreed on {date} UTC.").format(date=date)


def face_refused(refusal: FaceRefusal, photos: int = 1) -> str:
    """Why the face check refused a photo, with what was measured and what to do; one line."""
    # ``which`` names the photo inside a sentence, ``Which`` at its start.
    if refusal.photo is not None and photos > 1:
        which = _("photo {number}").format(number=refusal.photo)
        capital = _("Photo {number}").format(number=refusal.photo)
    else:
        which, capital = _("that photo"), _("That photo")
    measured, limit = refusal.measured or 0.0, refusal.limit or 0.0
    values = {"which": which, "Which": capital, "measured": measured, "limit": limit, "count": int(measured)}
    reason = refusal.reason
    if reason is FaceReason.NO_FACE:
        text = _("I couldn't find a face in {which}. Send a clear, well-lit photo with the face seen from the front.")
    elif reason is FaceReason.SEVERAL_FACES:
        text = _(
            "I see {count} faces of similar size in {which}, so I can't tell whose to use. "
            "Crop it to one face, or send a photo where that person is clearly the main one."
        )
    elif reason is FaceReason.SCREEN_OF_FACES:
        text = _("{Which} looks like a screen of {count} faces (a gallery or a video call). Send a photo of one face.")
    elif reason is FaceReason.SCREEN_PHOTO:
        text = _("{Which} looks like a photo of a screen (its pixel grid shows). Send the original photo instead.")
    elif reason is FaceReason.FACE_TOO_SMALL:
        text = _(
            "The face in {which} is only {measured:.0f} px across; it needs at least {limit:.0f} px. "
            "Send a closer or larger photo."
        )
    elif reason is FaceReason.TOO_DARK:
        text = _(
            "{Which} is too dark to read the face (brightness {measured:.0f} of 255, at least {limit:.0f} needed). "
            "Take it in better light."
        )
    elif reason is FaceReason.TOO_BLURRED:
        text = _(
            "{Which} is too blurred (sharpness {measured:.3f}, at least {limit:.3f} needed). "
            "Send a sharper one, taken holding still."
        )
    elif reason is FaceReason.NOT_FRONTAL:
        text = _(
            "The face in {which} is turned aside ({measured:+.2f}, at most ±{limit:.2f}). "
            "Send one looking at the camera."
        )
    elif reason is FaceReason.TOO_MANY_PHOTOS:
        text = _("Send at most {limit:.0f} photos of one face.")
    elif refusal.photo is not None:
        values["number"] = refusal.photo
        text = _(
            "Photo {number} looks like someone else (likeness {measured:.0%}, at least {limit:.0%} needed). "
            "Send photos of one person only."
        )
    else:
        text = _(
            "These photos look like different people (likeness {measured:.0%}, at least {limit:.0%} needed). "
            "Send photos of one person only."
        )
    return text.format_map(values) + " " + _("Nothing was charged or stored.")


# --- safety policy ---------------------------------------------------------------------------------
SAFETY_POLICIES = ("block", "spoiler", "allow")
BAD_SAFETY_POLICY = "Choose a safety policy: block, spoiler, allow, or default (the setting everywhere else)."
SAFETY_EXPLAINED = {
    "block": "results flagged unsafe are not sent, and refunded",
    "spoiler": "results flagged unsafe are sent hidden behind a spoiler",
    "allow": "results flagged unsafe are sent as they are",
}


def safety_policy(where: str, policy: str, own: bool) -> str:
    source = "" if own else " (the default)"
    return f"Safety policy {where}: {policy}{source}: {SAFETY_EXPLAINED.get(policy, '')}."


# --- front ends --------------------------------------------------------------------------------------
CANCEL_BUTTON = N_("Cancel")
REROLL_BUTTON = N_("🎲 Reroll")
VARY_BUTTON = N_("✨ Vary")
NEWER_BUTTON = N_("◀ Newer")
OLDER_BUTTON = N_("Older ▶")
FORGET_YES_BUTTON = N_("Delete everything")
FORGET_NO_BUTTON = N_("Keep")
INTERNAL_ERROR = N_("Sorry, something went wrong on my side. Please try again.")
BUTTON_EXPIRED = N_("This button no longer works.")
NOT_YOUR_BUTTONS = N_("These buttons belong to whoever asked: send the command yourself.")
TELEGRAM_SENT_AS_CHAT = N_(
    "I can't serve messages sent on behalf of a group or channel (anonymously or as a channel): "
    "send it from your own account."
)
BUTTONS_BELOW = N_("What next?")
PHOTO_NEEDS_CAPTION = N_("Add a caption describing the scene, e.g. “an astronaut on the moon --ar 3:4”.")
FACE_USAGE = N_(
    "Use: /face save <name> (with photos), /face list, /face use <name>, /face delete <name>, /face delete-all"
)


# --- discord -----------------------------------------------------------------------------------------
# Slash command and option descriptions, by dotted path (Discord allows 1–100 characters each); the
# users' commands are localized (bot/discord/translator.py), the admin commands stay English.
DISCORD_DESCRIPTIONS = {
    "imagine": N_("Render a portrait that keeps a face's likeness"),
    "imagine.prompt": N_("The scene to render; options such as --ar 3:4 work here too"),
    "imagine.photo": N_("A face photo (without one, your default saved face is used)"),
    "imagine.face": N_("One of your saved faces"),
    "imagine.aspect": N_("Aspect ratio of the image"),
    "imagine.seed": N_("Seed, for repeatable results"),
    "imagine.steps": N_("Sampling steps"),
    "imagine.id_weight": N_("How strongly the likeness is kept"),
    "imagine.guidance": N_("How closely the prompt is followed"),
    "imagine.images": N_("How many images"),
    "imagine.negative": N_("What to keep out of the image"),
    "imagine.style": N_("A style preset (/styles lists them)"),
    "imagine.strict": N_("Refuse rather than render with another model, fewer photos or another size"),
    "imagine.mode": N_("SDXL only: keep the face faithfully, or favour the style"),
    "language": N_("The language I answer you in"),
    "language.language": N_("A language, or the same as your Discord app"),
    "styles": N_("List the style presets"),
    "face": N_("Your saved faces"),
    "face.save": N_("Save a face from up to 4 photos of one person"),
    "face.save.name": N_("A short name: letters, digits, - and _"),
    "face.save.photo": N_("A clear photo of the face"),
    "face.save.photo2": N_("Another photo of the same face"),
    "face.save.photo3": N_("Another photo of the same face"),
    "face.save.photo4": N_("Another photo of the same face"),
    "face.list": N_("List your saved faces"),
    "face.use": N_("Make a saved face your default"),
    "face.use.name": N_("The face to use by default"),
    "face.delete": N_("Delete a saved face"),
    "face.delete.name": N_("The face to delete"),
    "face.delete-all": N_("Delete all your saved faces"),
    "history": N_("Your recent jobs"),
    "quota": N_("Your credits and today's limit"),
    "buy": N_("Buy credits"),
    "cancel": N_("Cancel your job in progress"),
    "forget": N_("Delete your faces, photos and history"),
    "help": N_("How to use the bot"),
    "admin": "Bot administration",
    "admin.grant": "Give credits to a user (a negative number takes them away)",
    "admin.grant.user": "A user: @mention, id, or platform:id",
    "admin.grant.credits": "Credits to add",
    "admin.limit": "Set a user's daily job limit",
    "admin.limit.user": "A user (@mention, id, platform:id) or 'default'",
    "admin.limit.jobs": "Jobs per day",
    "admin.ban": "Ban a user from the bot",
    "admin.ban.user": "A user: @mention, id, or platform:id",
    "admin.ban.reason": "Why (kept in the audit log)",
    "admin.unban": "Lift a ban",
    "admin.unban.user": "A user: @mention, id, or platform:id",
    "admin.stats": "Today's jobs, spend and queue",
    "admin.pause": "Pause new jobs in this server",
    "admin.pause.reason": "Shown to users who try",
    "admin.resume": "Accept new jobs in this server again",
    "admin.channels": "Channels the bot answers in",
    "admin.channels.add": "Answer in a channel (then only in the listed ones)",
    "admin.channels.add.channel": "The channel (default: this one)",
    "admin.channels.remove": "Stop answering in a channel",
    "admin.channels.remove.channel": "The channel (default: this one)",
    "admin.channels.clear": "Answer in every channel again",
    "admin.channels.list": "Show the channels the bot answers in",
    "admin.safety": "What happens to results flagged unsafe in this server",
    "admin.safety.policy": "block, spoiler or allow; default goes back to the bot's setting",
    "admin.images": "Cap the images this server's members render per day",
    "admin.images.cap": "Images per day, or off",
    "privacy": N_("What is kept of your photos, for how long, and how to delete it"),
}
# The users' command and option names, localized as Discord allows: lowercase letters, digits, - and _.
DISCORD_NAME = "Discord name"  # the context of the names in the catalogs
DISCORD_NAMES = (
    NC_("Discord name", "imagine"),
    NC_("Discord name", "face"),
    NC_("Discord name", "save"),
    NC_("Discord name", "list"),
    NC_("Discord name", "use"),
    NC_("Discord name", "delete"),
    NC_("Discord name", "delete-all"),
    NC_("Discord name", "history"),
    NC_("Discord name", "quota"),
    NC_("Discord name", "buy"),
    NC_("Discord name", "cancel"),
    NC_("Discord name", "forget"),
    NC_("Discord name", "privacy"),
    NC_("Discord name", "language"),
    NC_("Discord name", "styles"),
    NC_("Discord name", "help"),
    NC_("Discord name", "prompt"),
    NC_("Discord name", "photo"),
    NC_("Discord name", "photo2"),
    NC_("Discord name", "photo3"),
    NC_("Discord name", "photo4"),
    NC_("Discord name", "aspect"),
    NC_("Discord name", "seed"),
    NC_("Discord name", "steps"),
    NC_("Discord name", "id_weight"),
    NC_("Discord name", "guidance"),
    NC_("Discord name", "images"),
    NC_("Discord name", "negative"),
    NC_("Discord name", "style"),
    NC_("Discord name", "strict"),
    NC_("Discord name", "mode"),
    NC_("Discord name", "name"),
)
DISCORD_WORKING = N_("Working on it…")
DISCORD_ALL_CHANNELS = "I answer in every channel of this server."
DISCORD_SERVER_ONLY = N_("That works only in a server.")
DISCORD_RESULT_TOO_LARGE = N_("The image is too large to post here, even made smaller.")


def discord_channels(mentions: list[str]) -> str:
    return "I answer only in: " + ", ".join(mentions) + "."


def discord_for_user(user_id: str, text: str) -> str:
    """A result posted outside the interaction, addressed to the user who asked."""
    return f"<@{user_id}> {text}"


# --- operator (likeness generate) ------------------------------------------------------------------
def operator_progress(event: JobProgress) -> str:
    """One line on stderr for each progress event of an operator job."""
    if event.kind is ProgressKind.BACKEND:
        line = f"rendering on {event.backend}"
    elif event.kind is ProgressKind.PROVIDER_QUEUE:
        line = f"queued at {event.backend}" + (f", position {event.position}" if event.position is not None else "")
    elif event.kind is ProgressKind.RENDERING and event.fraction is not None:
        line = f"rendering {event.fraction:.0%}"
    elif event.kind is ProgressKind.LIKENESS_RETRY:
        line = f"likeness below the threshold: rendering again on {event.backend} (free)"
    else:
        line = str(event.kind)
    return f"[{event.job_id}] {line}"


def cannot_read(path: object, reason: str | None) -> str:
    return f"cannot read {path}: {reason}"


def unknown_backend(name: str) -> str:
    return f"unknown backend {name!r}"


def operator_no_backend(unavailable: tuple[str, ...]) -> str:
    return "no backend available: " + "; ".join(unavailable)


def operator_score(path: object, likeness: float | None, judge: str | None) -> str:
    """One line on stderr per written output: its likeness to the face photos."""
    if likeness is None:
        return f"{path}: not scored"
    return f"{path}: {likeness_text([likeness])} ({judge})"


def operator_job_failed(job_id: str, state: str, error: str | None) -> str:
    return f"job {job_id} {state}: {error or 'unknown reason'}"


# --- selling credits ---------------------------------------------------------------------------------
def pack_title(credits: int) -> str:
    return credit_count(credits)


def pack_description(credits: int, per_image: int) -> str:
    images = credits // per_image if per_image else credits
    return ngettext(
        "{credits} of Likeness: about {images} image. Credits never expire.",
        "{credits} of Likeness: about {images} images. Credits never expire.",
        images,
    ).format(credits=credit_count(credits), images=images)


BUY_INTRO = N_("Pick a pack below; it is paid in Telegram Stars. /terms · /paysupport")
DISCORD_STORE = N_(
    "Buy a credit pack: the button opens Discord's store, and the credits arrive when Discord confirms it."
)
NOTHING_FOR_SALE = N_("Credits aren't sold here. Ask the server's admins or the bot's admins for credits.")
PACK_GONE = N_("That pack is no longer on sale: send /buy for the current ones.")
BUY_BANNED = N_("This account can't buy credits.")
DEFAULT_TERMS = N_(
    "Terms of sale: credits are a digital service for rendering images with this bot. One image costs the "
    "credits shown by /quota; credits don't expire and can't be exchanged for money. A job that fails or is "
    "cancelled costs nothing. Unspent credits of a purchase can be refunded on request: see /paysupport."
)
DEFAULT_SUPPORT = N_("For help with a payment, write to the bot's admins and include the payment's charge id.")


def paysupport(support: str) -> str:
    return support or _(DEFAULT_SUPPORT)


def purchased(credits: int, balance: int) -> str:
    return _("Thank you! {credits} added; you now have {balance}.").format(
        credits=credit_count(credits), balance=balance
    )


def purchase_line(date: str, credits: int, price: str, refunded: bool) -> str:
    line = f"{date}  +" + credit_count(credits) + f" ({price})"
    return line + "  " + _("refunded") if refunded else line


def purchases_text(lines: list[str]) -> str:
    return _("Last purchases:") + "\n" + "\n".join(lines)


REFUND_USAGE = "Use: /admin refund <charge id> [force]"
REFUND_UNKNOWN = "No purchase has that charge id."
REFUND_ALREADY = "That purchase was refunded already."
REFUND_ELSEWHERE = "Discord purchases are refunded by Discord; their credits go with it: use /admin grant to adjust."


def refund_spent(credits: int, available: int) -> str:
    return (
        f"Not refunded: the purchase gave {credits} credits and only {available} are unspent. "
        "Add 'force' to refund anyway, taking back what is left."
    )


def refunded(charge_id: str, removed: int) -> str:
    return f"Refunded {charge_id}; {removed} credits taken back."


def refund_refused(reason: str) -> str:
    return f"The platform refused the refund ({reason}); the credits stay with the user."


# --- budgets ---------------------------------------------------------------------------------------
OVER_BUDGET = N_(
    "Today's rendering budget is used up: new jobs are accepted again after midnight UTC. You were not charged."
)
FAILURES["over_budget"] = N_("Today's rendering budget ran out before your job could start.")


def budget_alert(budget: str, threshold: int, used_usd: float, limit_usd: float, day: str) -> str:
    what = "the total budget" if budget == "total" else f"the budget of {budget}"
    if threshold >= 100:
        return (
            f"Budget reached on {day}: {what} (${limit_usd:.2f}) is used up (${used_usd:.2f}). "
            "No new jobs start on it until midnight UTC."
        )
    return f"Budget at {threshold}% on {day}: {what} has ${used_usd:.2f} of ${limit_usd:.2f} spent or held."


# --- confirming costly jobs ------------------------------------------------------------------------
def confirm_cost(cost: int, available: int, images: int) -> str:
    if images > 1:
        return ngettext(
            "This job ({images} images, {cost}) needs your confirmation. You have {count} credit.",
            "This job ({images} images, {cost}) needs your confirmation. You have {count} credits.",
            available,
        ).format(images=images, cost=credit_count(cost), count=available)
    return ngettext(
        "This job ({cost}) needs your confirmation. You have {count} credit.",
        "This job ({cost}) needs your confirmation. You have {count} credits.",
        available,
    ).format(cost=credit_count(cost), count=available)


CONFIRM = N_("Confirm")
DECLINE = N_("Cancel")
CONFIRM_GONE = N_("That request was confirmed, cancelled or has expired already.")
DECLINED = N_("Cancelled: nothing was charged.")


# --- per-scope image caps ------------------------------------------------------------------------
def scope_cap_reached(cap: int) -> str:
    return ngettext(
        "This server or group has reached its limit of {count} image today. It resets at midnight UTC.",
        "This server or group has reached its limit of {count} images today. It resets at midnight UTC.",
        cap,
    ).format(count=cap)


IMAGE_CAP_WHERE = "Image caps are set in a Discord server or a Telegram group, by its admins."
IMAGE_CAP_USAGE = "Use: /admin images <images per day|off>"


def image_cap(where: str, cap: int | None, used: int) -> str:
    if cap is None:
        return f"No daily image cap {where}; {used} rendered today."
    return f"Daily image cap {where}: {cap} images, {used} rendered today (resets at midnight UTC)."
