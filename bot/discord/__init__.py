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
    import discord

# The bot uses no voice: discord.py's warnings about missing voice libraries would only be noise.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False
