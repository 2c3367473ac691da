#!/usr/bin/env bash
# Translations. `scripts/i18n.sh` extracts every text users read (bot/messages.py) into bot/locales/likeness.pot
# and merges it into each language's catalog; new texts come in untranslated, so the translation test fails
# until every catalog has them. `scripts/i18n.sh init LANG` starts a catalog for a new language (then add the
# language to LANGUAGES in bot/i18n.py). Catalogs are read from their .po files at run time: nothing to compile.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYBABEL="$VENV/bin/pybabel"
POT=bot/locales/likeness.pot
COMMON=(--width 120)

"$PYBABEL" --quiet extract -F babel.cfg -o "$POT" --no-location --sort-output --project Likeness \
  --msgid-bugs-address "" --copyright-holder "" --add-comments "Translators:" -k "NC_:1c,2" "${COMMON[@]}" .

if [ "${1:-}" = "init" ]; then
  "$PYBABEL" --quiet init -i "$POT" -d bot/locales -D likeness -l "${2:?usage: scripts/i18n.sh init LANG}" "${COMMON[@]}"
  exit 0
fi
[ -z "$(ls bot/locales/*/LC_MESSAGES/likeness.po 2>/dev/null)" ] || "$PYBABEL" --quiet update -i "$POT" -d bot/locales -D likeness --no-fuzzy-matching --ignore-obsolete "${COMMON[@]}"
