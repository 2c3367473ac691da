"""Every catalog translates every text users read, keeps its placeholders, and fills every plural form."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

from bot import i18n, messages
from bot.discord.commands import COMMANDS, add_commands
from bot.discord.translator import CatalogTranslator

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = [code for code in i18n.LANGUAGES if code != i18n.SOURCE]
KEYWORDS = {**DEFAULT_KEYWORDS, "NC_": ((1, "c"), 2)}  # as scripts/i18n.sh extracts
DISCORD_NAME = re.compile(r"[-_\w]{1,32}")
# Admin and operator texts stay English; every other fixed text is marked for translation.
ENGLISH_ONLY = frozenset(
    {
        "ADMIN_USAGE",
        "BAD_USER_REF",
        "BAD_NUMBER",
        "RESUMED",
        "DISCORD_ALL_CHANNELS",
        "DISCORD_NAME",
        "REFUND_USAGE",
        "REFUND_UNKNOWN",
        "REFUND_ALREADY",
        "REFUND_ELSEWHERE",
        "BAD_SAFETY_POLICY",
        "IMAGE_CAP_USAGE",
        "IMAGE_CAP_WHERE",
    }
)


def extracted() -> set[tuple[str | None, str]]:
    """(context, msgid) of every text marked in bot/messages.py, as the extraction command finds them."""
    found = set()
    for _line, message, _comments, context in extract_from_file("python", ROOT / "bot" / "messages.py", KEYWORDS):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.add((context, msgid))
    return found


def catalog(language: str) -> Catalog:
    with i18n.catalog_path(language).open("rb") as source:
        return read_po(source, locale=i18n.locale_name(language))


def fields(text: str) -> list[str]:
    """The replacement fields of a format string, as written ("{count}", "{value!r}", "{fraction:.0%}")."""
    found = []
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is not None:
            found.append("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return sorted(found)


class Anything(dict[str, Any]):
    def __missing__(self, key: str) -> float:
        return 0.5


def entries(language: str) -> list[Message]:
    return [message for message in catalog(language) if message.id]


def test_the_template_holds_every_marked_text() -> None:
    with (ROOT / "bot" / "locales" / "likeness.pot").open("rb") as source:
        template = read_po(source)
    held = {(m.context, m.id[0] if isinstance(m.id, tuple) else m.id) for m in template if m.id}
    assert extracted() == held, "run scripts/i18n.sh"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_catalog_translates_every_text(language: str) -> None:
    found = {(m.context, m.id[0] if isinstance(m.id, tuple) else m.id): m for m in entries(language)}
    missing = extracted() - set(found)
    assert not missing, f"{language}: run scripts/i18n.sh and translate {sorted(missing)[:3]}"
    untranslated = [
        key
        for key, message in found.items()
        if message.fuzzy or not all(message.string if isinstance(message.string, tuple) else (message.string,))
    ]
    assert not untranslated, f"{language}: untranslated or fuzzy {untranslated[:3]}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_the_placeholders_and_every_plural_form(language: str) -> None:
    book = catalog(language)
    for message in entries(language):
        if isinstance(message.id, tuple):
            assert isinstance(message.string, tuple) and len(message.string) == book.num_plurals, message.id
            wanted = fields(message.id[1])
            assert fields(message.id[0]) == wanted, f"{message.id}: the English forms differ"
            forms = list(message.string)
        else:
            wanted, forms = fields(message.id), [message.string]
        for form in forms:
            assert fields(form) == wanted, f"{language}: {form!r} must hold {wanted}"
            form.format_map(Anything())  # a broken brace raises here


def test_the_plural_forms_are_each_languages_own() -> None:
    counts = {count: {} for count in (1, 2, 5, 21)}
    for language in i18n.LANGUAGES:
        with i18n.language(language):
            for count in counts:
                counts[count][language] = messages.credit_count(count)
    assert counts[1] == {"en": "1 credit", "ru": "1 кредит", "es": "1 crédito", "pt-BR": "1 crédito", "de": "1 Credit"}
    assert (counts[2]["ru"], counts[5]["ru"], counts[21]["ru"]) == ("2 кредита", "5 кредитов", "21 кредит")
    assert (counts[2]["en"], counts[2]["de"], counts[5]["es"]) == ("2 credits", "2 Credits", "5 créditos")


def test_fixed_texts_are_read_in_the_current_language() -> None:
    with i18n.language("de"):
        assert messages.NOT_YOUR_JOB == "Das ist keiner deiner Aufträge."
        assert messages.FAILURES["deadline"] == "That took too long and was stopped."  # a source: failure() translates
        assert (
            messages.failure("deadline", 0)
            == "Das hat zu lange gedauert und wurde gestoppt. Es wurde nichts berechnet."
        )
    assert messages.NOT_YOUR_JOB == "That isn't one of your jobs."


def test_every_fixed_text_for_users_is_marked_for_translation() -> None:
    plain = {
        name
        for name, value in vars(messages).items()
        if name.isupper() and type(value) is str and name not in ENGLISH_ONLY
    }
    assert not plain, f"mark with N_ (or list as an admin text): {sorted(plain)}"


def test_language_tags_of_the_platforms_find_their_catalog() -> None:
    assert [i18n.match(tag) for tag in ("ru", "pt-br", "pt_BR", "es-419", "es-ES", "de-AT", "en-GB", "fr", None)] == [
        "ru",
        "pt-BR",
        "pt-BR",
        "es",
        "es",
        "de",
        "en",
        None,
        None,
    ]
    assert i18n.resolve("de", "ru", "en") == "de"
    assert i18n.resolve(None, "ru", "en") == "ru"
    assert i18n.resolve(None, "fr", "es") == "es"


async def test_the_users_slash_commands_are_localized_and_admin_ones_stay_english() -> None:
    import discord  # after bot.discord, which keeps discord.py's import quiet
    from discord import app_commands

    client = discord.Client(intents=discord.Intents.none())
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    add_commands(tree)
    translator = CatalogTranslator()
    for command in COMMANDS:
        payload = await command.get_translated_payload(tree, translator)
        localized = payload.get("name_localizations") or {}
        if command.name == "admin":
            assert not localized and not payload.get("description_localizations")
            continue
        assert set(localized) >= {"ru", "es-ES", "es-419", "pt-BR", "de"}, command.name
        for name in localized.values():
            assert DISCORD_NAME.fullmatch(name) and name == name.lower(), name
        assert all(0 < len(text) <= 100 for text in payload["description_localizations"].values())
        for option in payload.get("options", []):
            names = [o.get("name_localizations", {}).get("de", o["name"]) for o in payload.get("options", [])]
            assert len(names) == len(set(names)), f"{command.name}: two options share a German name"
            for text in option.get("description_localizations", {}).values():
                assert 0 < len(text) <= 100
    imagine = await COMMANDS[0].get_translated_payload(tree, translator)
    assert imagine["name_localizations"]["ru"] == "создать"
    assert (
        imagine["description_localizations"]["de"] == "Ein Porträt erzeugen, das die Ähnlichkeit eines Gesichts bewahrt"
    )
    await client.close()
