"""Every string a user or an admin reads, in one place."""

from __future__ import annotations

from typing import Any

from engine.capabilities import Choice, Problem, Range, Text
from engine.events import JobProgress, ProgressKind
from storage.errors import QuotaRefused, RefusalReason
from storage.stats import Stats
from storage.workers import WorkerInfo

# --- admin -------------------------------------------------------------------------------------
NOT_ADMIN = "Only bot admins can do that."
NOT_SERVER_MANAGER = "Only this server's managers (Manage Server) or bot admins can do that."
ADMIN_USAGE = (
    "Admin commands:\n"
    "/admin grant <user> <credits>\n"
    "/admin limit <user|default> <jobs per day>\n"
    "/admin ban <user> [reason] · /admin unban <user>\n"
    "/admin stats\n"
    "/admin pause [reason] · /admin resume\n"
    "/admin refund <charge id> [force]"
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
    return (
        f"Jobs today: {stats.total} ({states})\n"
        f"Success rate: {rate}\n"
        f"Spend per backend: {spend}\n"
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
def refusal(refused: QuotaRefused) -> str:
    if refused.reason is RefusalReason.BANNED:
        return "You can't use this bot."
    if refused.reason is RefusalReason.NO_CREDITS:
        return (
            f"Not enough credits: this needs {refused.needed}, you have {max(refused.available, 0)}. "
            "Ask an admin for more."
        )
    if refused.reason is RefusalReason.DAILY_LIMIT:
        if refused.limit <= 0:
            return "New jobs are switched off for you: your daily limit is 0 jobs."
        return f"You've reached today's limit of {refused.limit} jobs. It resets at midnight UTC."
    return "Something is off with your account; try /start."


# --- photos ------------------------------------------------------------------------------------
PHOTO_TOO_LARGE = "That file is too large: send a photo under {mb} MB."
PHOTO_NOT_IMAGE = "That isn't a photo I can read: send a JPEG, PNG or WebP image."
PHOTO_EMPTY = "That file is empty: send a photo of the face (JPEG, PNG or WebP)."
PHOTO_ANIMATED = "Animated images aren't accepted: send a still photo of the face (JPEG, PNG or WebP)."


def photo_kind_refused(kind: str) -> str:
    """A file of a kind intake recognises but does not take (GIF, TIFF, SVG, HEIC…)."""
    if kind in ("GIF", "SVG", "PDF"):
        return f"{kind} files aren't accepted: send a photo of the face as JPEG, PNG or WebP."
    return f"{kind} images aren't accepted: send the photo as JPEG, PNG or WebP (or as a photo, not a file)."


def photo_too_many_pixels(width: int, height: int, megapixels: int) -> str:
    return f"That image has too many pixels ({width}×{height}): send a photo of at most {megapixels} megapixels."


def photo_too_big_to_open(kind: str, width: int, height: int) -> str:
    return (
        f"That {kind} has too many pixels to open safely ({width}×{height}): "
        "send a smaller one, or the photo as a JPEG."
    )


def photo_too_narrow(width: int, height: int, ratio: int) -> str:
    return f"That image is too long and thin ({width}×{height}): crop it closer to the face, to at most {ratio}:1."


PHOTO_DAMAGED = "That image is damaged or incomplete: please send it again."
PHOTO_TOO_SMALL = "That photo is too small ({w}×{h}): the face needs at least {side} px on the short side."

# --- parameters ----------------------------------------------------------------------------------
PARAMETER_NAMES = {
    "width": "width",
    "height": "height",
    "steps": "steps",
    "guidance": "guidance",
    "id_weight": "id weight",
    "start_step": "start step",
    "true_cfg": "true CFG",
    "seed": "seed",
    "num_images": "number of images",
    "output_format": "format",
    "negative_prompt": "negative prompt",
    "max_sequence_length": "max sequence length",
    "output_quality": "quality",
    "safety_checker": "safety checker",
    "mode": "mode",
}


def _allowed(problem: Problem) -> str:
    limit = problem.allowed
    if limit is None:
        return "not supported there"
    if isinstance(limit, Range):
        low = int(limit.low) if limit.integer else limit.low
        high = int(limit.high) if limit.integer else limit.high
        return f"allowed {low}–{high}"
    if isinstance(limit, Text):
        return f"at most {limit.max_length} characters"
    assert isinstance(limit, Choice)
    return "allowed " + ", ".join(str(option) for option in limit.options)


MAX_PROMPT = 1000
EMPTY_PROMPT = "Write what to render, e.g. /imagine a portrait in the rain --ar 3:4"
PROMPT_TOO_LONG = "That prompt is too long: keep it under {limit} characters."
BAD_OPTION = "{flag} {value!r} is not valid: expected {expected}."
UNKNOWN_OPTION = "Unknown option {flag}. Options: {known}, --no <things to avoid>."
MISSING_VALUE = "{flag} needs a value."
BAD_ASPECT = "Aspect {value!r} is not a ratio like 3:4 (between 1:4 and 4:1)."


def text_too_long(what: str, limit: int) -> str:
    return f"That {what} is too long: keep it under {limit} characters."


def hidden_characters(what: str, codepoint: str) -> str:
    return f"That {what} holds an invisible control character ({codepoint}): remove it and send it again."


def prompt_mentions(what: str, mention: str) -> str:
    return f"A {what} can't mention anyone ({mention}): describe the scene without the @."


def no_backend(found: tuple[Problem, ...] | list[Problem]) -> str:
    """Why nothing can render a request: each broken range with what is allowed, or that none is up."""
    if not found:
        return "No image backend is available right now. Please try again later."
    lines = [
        f"• {PARAMETER_NAMES.get(p.parameter, p.parameter)} {p.value!r} on {p.backend}: {_allowed(p)}" for p in found
    ]
    return "No backend can take these settings:\n" + "\n".join(lines)


# --- users -----------------------------------------------------------------------------------------
def welcome(available: int) -> str:
    return (
        "Hi! Send me a face photo with a caption describing a scene, and I'll render you in it.\n"
        f"You have {available} credits. /help lists everything I can do.\n\n"
        "Privacy: your photos are used only to render your images, kept for a limited time, and "
        "deleted with /forget whenever you like. Only send photos of yourself or of people who agreed."
    )


HELP = (
    "How to use me:\n"
    "• Send a photo with a caption: the caption is the prompt.\n"
    "• /imagine <prompt> renders with your saved face.\n"
    "• Options: --ar 3:4, --seed 42, --steps 20, --id-weight 0.9, --guidance 4, --n 2, --no <things to avoid>\n"
    "• /face save <name> (with or replying to up to 4 photos), /face list, /face use <name>, "
    "/face delete <name>, /face delete-all\n"
    "• /history, /quota, /cancel, /forget\n"
    "• /buy credits · /terms · /paysupport"
)
NOT_THIS_CHANNEL = "I don't take requests in this channel."


def paused_for_users(reason: str) -> str:
    return "New requests are paused right now" + (f": {reason}" if reason else ".")


# --- imagine ---------------------------------------------------------------------------------------
TOO_MANY_PHOTOS = "Send at most {limit} photos of one face."
NO_SUCH_FACE = "You have no saved face called {name!r}. /face list shows yours."
NO_FACE_YET = "Send a face photo with your prompt, or save one first with /face save <name>."
NO_BACKEND_UP = "No image backend is available right now. Please try again later."
STARTED = "Rendering…"
NOT_YOUR_JOB = "That isn't one of your jobs."
JOB_EXPIRED = "That job's photos have expired: send the photo again."
NOTHING_TO_CANCEL = "You have nothing queued or rendering."
CANCELLED_REFUNDED = "Cancelled. Your credits were refunded."


def queued(position: int | None) -> str:
    return "Queued" + (f" — position {position}" if position else "") + "."


def waiting_for_worker(position: int | None) -> str:
    return (
        "Queued" + (f" — position {position}" if position else "") + ". No renderer is up right now: "
        "your job waits for one and starts as soon as one is back (you are not charged if it never starts)."
    )


def cancel_outcome(outcome: str) -> str:
    return {
        "cancelled": "Cancelled. Your credits were refunded.",
        "requested": "Cancelling… you won't be charged.",
    }.get(outcome, "That job has already finished.")


def rendering_on(backend: str) -> str:
    return f"Rendering on {backend}…"


def provider_queue(backend: str, position: int | None) -> str:
    return f"Waiting at {backend}" + (f" — position {position}" if position is not None else "") + "…"


def rendering_fraction(backend: str, fraction: float) -> str:
    return f"Rendering on {backend}… {fraction:.0%}"


def status_progress(event: JobProgress) -> str | None:
    """A running job's status message for a progress event; None for events a user need not see."""
    if event.kind is ProgressKind.BACKEND:
        return rendering_on(event.backend or "")
    if event.kind is ProgressKind.PROVIDER_QUEUE:
        return provider_queue(event.backend or "", event.position)
    if event.kind is ProgressKind.RENDERING and event.fraction is not None:
        return rendering_fraction(event.backend or "", event.fraction)
    return None


def result_caption(job: Any) -> str:
    prompt = str(job.params.get("prompt", ""))
    short = prompt if len(prompt) <= 200 else prompt[:199] + "…"
    seed = f" · seed {job.seed}" if job.seed else ""
    return f"{short}{seed} · {job.backend}"


FAILURES = {
    "content_policy": "The image service refused this prompt or photo. Try different wording.",
    "no_face": "I couldn't find a clear face in that photo. Try a sharper, front-facing one.",
    "invalid_input": "The image service couldn't use that photo or those settings.",
    "deadline": "That took too long and was stopped.",
    "no_backend": "No image backend could take that request right now.",
    "unknown_outcome": "The image service stopped answering mid-request.",
    "photo_missing": "Your photo is no longer stored: please send it again.",
}


def failure(reason: str, cost: int) -> str:
    text = FAILURES.get(reason, "Something went wrong while rendering.")
    return f"{text} You were not charged" + (f" ({cost} credits refunded)." if cost else ".")


# --- identities ------------------------------------------------------------------------------------
BAD_FACE_NAME = "Face names use letters, digits, - and _, up to 32 characters."
FACE_NEEDS_PHOTOS = "Send /face save <name> with a photo (or up to 4), or reply to photos with it."


def face_cap(limit: int) -> str:
    return f"You can keep at most {limit} face{'s' if limit != 1 else ''}. Delete one with /face delete <name>."


FACE_DEFAULT = "{name!r} is now your default face."


def face_saved(name: str, photos: int) -> str:
    return f"Saved face {name!r} ({photos} photo{'s' if photos != 1 else ''}); it is now your default."


def face_list(faces: list[tuple[str, int, bool]]) -> str:
    if not faces:
        return "You have no saved faces. Use /face save <name> with a photo."
    lines = [
        f"• {name} ({count} photo{'s' if count != 1 else ''}){' — default' if default else ''}"
        for name, count, default in faces
    ]
    return "Your faces:\n" + "\n".join(lines)


def faces_deleted(count: int) -> str:
    return "No faces to delete." if count == 0 else f"Deleted {count} face{'s' if count != 1 else ''}."


# --- history, quota, forget ------------------------------------------------------------------------
NO_HISTORY = "You haven't rendered anything yet."


NOT_DELIVERED = "could not be delivered (refunded)"


def history_line(date: str, job: Any) -> str:
    prompt = str(job.params.get("prompt", ""))
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    seed = job.seed or job.params.get("seed") or "random"
    outcome = "expired" if job.expired else str(job.state)
    if job.state == "failed" and job.error:
        outcome += f" ({job.error})"
    if job.state == "succeeded" and job.delivery_state == "undeliverable":
        outcome += ", " + NOT_DELIVERED
    return f"• {date} — {prompt}\n  seed {seed} · {job.backend or 'not started'} · {outcome}"


def history_page(lines: list[str], page: int, pages: int) -> str:
    return f"Your jobs (page {page} of {pages}):\n" + "\n".join(lines)


def quota_text(
    *, available: int, reserved: int, used_today: int, daily_limit: int, per_image: int, unlimited: bool
) -> str:
    if unlimited:
        return "You have no limits."
    held = f" ({reserved} held for jobs in progress)" if reserved else ""
    return (
        f"Credits: {available}{held}\n"
        f"Jobs today: {used_today} of {daily_limit} (resets at midnight UTC)\n"
        f"One image costs {per_image} credit{'s' if per_image != 1 else ''}."
    )


FORGET_CONFIRM = (
    "This deletes your saved faces, your photos and your history for good. Your credit balance stays. Are you sure?"
)
FORGET_KEPT = "Nothing was deleted."
FORGET_BUSY = "You have a job in progress: wait for it to finish (or /cancel it), then try again."
FORGOTTEN = "Done: your faces, photos and history are deleted."


# --- front ends --------------------------------------------------------------------------------------
INTERNAL_ERROR = "Sorry, something went wrong on my side. Please try again."
BUTTON_EXPIRED = "This button no longer works."
NOT_YOUR_BUTTONS = "These buttons belong to whoever asked: send the command yourself."
TELEGRAM_SENT_AS_CHAT = (
    "I can't serve messages sent on behalf of a group or channel (anonymously or as a channel): "
    "send it from your own account."
)
BUTTONS_BELOW = "What next?"
PHOTO_NEEDS_CAPTION = "Add a caption describing the scene, e.g. “an astronaut on the moon --ar 3:4”."
FACE_USAGE = "Use: /face save <name> (with photos), /face list, /face use <name>, /face delete <name>, /face delete-all"


# --- discord -----------------------------------------------------------------------------------------
# Slash command and option descriptions, by dotted path (Discord allows 1–100 characters each).
DISCORD_DESCRIPTIONS = {
    "imagine": "Render a portrait that keeps a face's likeness",
    "imagine.prompt": "The scene to render; options such as --ar 3:4 work here too",
    "imagine.photo": "A face photo (without one, your default saved face is used)",
    "imagine.face": "One of your saved faces",
    "imagine.aspect": "Aspect ratio of the image",
    "imagine.seed": "Seed, for repeatable results",
    "imagine.steps": "Sampling steps",
    "imagine.id_weight": "How strongly the likeness is kept",
    "imagine.guidance": "How closely the prompt is followed",
    "imagine.images": "How many images",
    "imagine.negative": "What to keep out of the image",
    "face": "Your saved faces",
    "face.save": "Save a face from up to 4 photos of one person",
    "face.save.name": "A short name: letters, digits, - and _",
    "face.save.photo": "A clear photo of the face",
    "face.save.photo2": "Another photo of the same face",
    "face.save.photo3": "Another photo of the same face",
    "face.save.photo4": "Another photo of the same face",
    "face.list": "List your saved faces",
    "face.use": "Make a saved face your default",
    "face.use.name": "The face to use by default",
    "face.delete": "Delete a saved face",
    "face.delete.name": "The face to delete",
    "face.delete-all": "Delete all your saved faces",
    "history": "Your recent jobs",
    "quota": "Your credits and today's limit",
    "buy": "Buy credits",
    "cancel": "Cancel your job in progress",
    "forget": "Delete your faces, photos and history",
    "help": "How to use the bot",
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
}
DISCORD_WORKING = "Working on it…"
DISCORD_ALL_CHANNELS = "I answer in every channel of this server."
DISCORD_SERVER_ONLY = "That works only in a server."
DISCORD_RESULT_TOO_LARGE = "The image is too large to post here, even made smaller."


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
    else:
        line = str(event.kind)
    return f"[{event.job_id}] {line}"


def cannot_read(path: object, reason: str | None) -> str:
    return f"cannot read {path}: {reason}"


def unknown_backend(name: str) -> str:
    return f"unknown backend {name!r}"


def operator_no_backend(unavailable: tuple[str, ...]) -> str:
    return "no backend available: " + "; ".join(unavailable)


def operator_job_failed(job_id: str, state: str, error: str | None) -> str:
    return f"job {job_id} {state}: {error or 'unknown reason'}"


# --- selling credits ---------------------------------------------------------------------------------
def pack_title(credits: int) -> str:
    return f"{credits} credits"


def pack_description(credits: int, per_image: int) -> str:
    images = credits // per_image if per_image else credits
    return f"{credits} Likeness credits: about {images} images. Credits never expire."


BUY_INTRO = "Pick a pack below; it is paid in Telegram Stars. /terms · /paysupport"
DISCORD_STORE = "Buy a credit pack: the button opens Discord's store, and the credits arrive when Discord confirms it."
NOTHING_FOR_SALE = "Credits aren't sold here. Ask the server's admins or the bot's admins for credits."
PACK_GONE = "That pack is no longer on sale: send /buy for the current ones."
BUY_BANNED = "This account can't buy credits."
DEFAULT_TERMS = (
    "Terms of sale: credits are a digital service for rendering images with this bot. One image costs the "
    "credits shown by /quota; credits don't expire and can't be exchanged for money. A job that fails or is "
    "cancelled costs nothing. Unspent credits of a purchase can be refunded on request: see /paysupport."
)
DEFAULT_SUPPORT = "For help with a payment, write to the bot's admins and include the payment's charge id."


def paysupport(support: str) -> str:
    return support or DEFAULT_SUPPORT


def purchased(credits: int, balance: int) -> str:
    return f"Thank you! {credits} credits added; you now have {balance}."


def purchase_line(date: str, credits: int, price: str, refunded: bool) -> str:
    return f"{date}  +{credits} credits ({price})" + ("  refunded" if refunded else "")


def purchases_text(lines: list[str]) -> str:
    return "Last purchases:\n" + "\n".join(lines)


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
OVER_BUDGET = (
    "Today's rendering budget is used up: new jobs are accepted again after midnight UTC. You were not charged."
)
FAILURES["over_budget"] = "Today's rendering budget ran out before your job could start."


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
    shown = f"{images} images, " if images > 1 else ""
    return f"This job ({shown}{cost} credits) needs your confirmation. You have {available} credits."


CONFIRM = "Confirm"
DECLINE = "Cancel"
CONFIRM_GONE = "That request was confirmed, cancelled or has expired already."
DECLINED = "Cancelled: nothing was charged."
