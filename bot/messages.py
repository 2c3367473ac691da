"""Every string a user or an admin reads, in one place."""

from __future__ import annotations

from engine.capabilities import Choice, Problem, Range, Text
from storage.errors import QuotaRefused, RefusalReason
from storage.stats import Stats

# --- admin -------------------------------------------------------------------------------------
NOT_ADMIN = "Only bot admins can do that."
ADMIN_USAGE = (
    "Admin commands:\n"
    "/admin grant <user> <credits>\n"
    "/admin limit <user|default> <jobs per day>\n"
    "/admin ban <user> [reason] · /admin unban <user>\n"
    "/admin stats\n"
    "/admin pause [reason] · /admin resume"
)
BAD_USER_REF = "Name a user as <platform>:<id> (telegram or discord), or a bare id on this platform."
BAD_NUMBER = "{what} must be a whole number, got {value!r}."


def granted(user: str, amount: int, balance: int) -> str:
    verb = "Granted" if amount >= 0 else "Took"
    return f"{verb} {abs(amount)} credits {'to' if amount >= 0 else 'from'} {user}; balance now {balance}."


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
    spend = (
        ", ".join(f"{backend} ${usd:.4f}" for backend, usd in sorted(stats.spend_by_backend.items()))
        or "none"
    )
    return (
        f"Jobs today: {stats.total} ({states})\n"
        f"Success rate: {rate}\n"
        f"Spend per backend: {spend}\n"
        f"Queue depth: {stats.queue_depth} queued, {stats.running} running\n"
        f"Users: {stats.users}"
    )


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
        return f"You've reached today's limit of {refused.limit} jobs. It resets at midnight UTC."
    return "Something is off with your account; try /start."


# --- photos ------------------------------------------------------------------------------------
PHOTO_TOO_LARGE = "That file is too large: send a photo under {mb} MB."
PHOTO_NOT_IMAGE = "That isn't a photo I can read: send a JPEG, PNG or WebP image."
PHOTO_TOO_MANY_PIXELS = "That image has far too many pixels: send an ordinary photo."
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


BAD_ASPECT = "Aspect {value!r} is not a ratio like 3:4 (between 1:4 and 4:1)."


def no_backend(found: tuple[Problem, ...] | list[Problem]) -> str:
    """Why nothing can render a request: each broken range with what is allowed, or that none is up."""
    if not found:
        return "No image backend is available right now. Please try again later."
    lines = [
        f"• {PARAMETER_NAMES.get(p.parameter, p.parameter)} {p.value!r} on {p.backend}: {_allowed(p)}"
        for p in found
    ]
    return "No backend can take these settings:\n" + "\n".join(lines)
