"""The languages users read: gettext catalogs read from their .po files, and the language of the reader now."""

from __future__ import annotations

import contextlib
import functools
import gettext as gnu
import io
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SOURCE = "en"  # the language the texts are written in; it has no catalog
# Every language with a complete catalog, by the tag users name it with, and its own name for itself.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "ru": "Русский",
    "es": "Español",
    "pt-BR": "Português (Brasil)",
    "de": "Deutsch",
}
DOMAIN = "likeness"
LOCALES_DIR = Path(__file__).parent / "locales"

_current: ContextVar[str] = ContextVar("likeness_language", default=SOURCE)


def locale_name(language: str) -> str:
    """The catalog folder of a language: gettext's spelling ("pt_BR" for "pt-BR")."""
    return language.replace("-", "_")


def catalog_path(language: str) -> Path:
    return LOCALES_DIR / locale_name(language) / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(language: str) -> gnu.NullTranslations:
    """The language's catalog, read from its .po file once (so a fresh checkout needs no build step).

    Fuzzy entries are left out: an unchecked translation falls back to the English text.
    """
    if language == SOURCE or language not in LANGUAGES:
        return gnu.NullTranslations()
    with catalog_path(language).open("rb") as source:
        catalog = read_po(source, locale=locale_name(language), domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gnu.GNUTranslations(compiled)


def current() -> str:
    """The language of the reader being answered now."""
    return _current.get()


def use(language: str) -> None:
    """Answer in ``language`` for the rest of this task (a front end's handling of one update)."""
    _current.set(language if language in LANGUAGES else SOURCE)


@contextlib.contextmanager
def language(code: str) -> Iterator[None]:
    """Answer in ``code`` inside the block (a delivery or a status edit for one job's user)."""
    token = _current.set(code if code in LANGUAGES else SOURCE)
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, count)


def match(locale: str | None) -> str | None:
    """The supported language for a platform's locale tag ("ru", "pt-br", "es-419", "en_GB"), or None.

    A region we have no catalog for falls back to the language's catalog ("de-AT" reads German, "pt-PT"
    Brazilian Portuguese)."""
    if not locale:
        return None
    tag = locale.replace("_", "-").strip().lower()
    by_tag = {code.lower(): code for code in LANGUAGES}
    if tag in by_tag:
        return by_tag[tag]
    primary = tag.split("-")[0]
    return next((code for code in LANGUAGES if code.split("-")[0].lower() == primary), None)


def resolve(chosen: str | None, locale: str | None, default: str) -> str:
    """The user's own choice, else their platform's language, else the operator's default."""
    if chosen in LANGUAGES:
        return chosen
    return match(locale) or (default if default in LANGUAGES else SOURCE)
