"""Discord front end: slash commands, restart-proof buttons and result delivery over discord.py."""

import re
import warnings

with warnings.catch_warnings():
    # discord.py's voice support imports audioop, deprecated on Python 3.11-3.12; the bot uses no voice.
    warnings.filterwarnings(
        "ignore",
        message=re.escape("'audioop' is deprecated and slated for removal in Python 3.13"),
        category=DeprecationWarning,
    )
    import discord  # noqa: F401
