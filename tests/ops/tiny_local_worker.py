"""`likeness worker` with the local engine on tiny models (for the multi-process tests): the production
command, with the backend builder given the tiny renderer in place of the real weights' loaders.

Run as ``python -m tests.ops.tiny_local_worker`` with LIKENESS_LOCAL__MODELS_DIR pointing at
``tests.engine.local.tiny.write_models_dir``'s output."""

from __future__ import annotations

import sys

import aiohttp

from bot import cli
from bot.settings import Settings
from bot.wiring import engine
from engine.backend import Backend
from engine.catalogue import LOCAL


def tiny_backends(settings: Settings, _http: aiohttp.ClientSession) -> dict[str, Backend]:
    from engine.local.backend import LocalBackend
    from tests.engine.local import tiny

    models_dir = settings.models_dir
    return {
        LOCAL: LocalBackend(
            tiny.tiny_settings(models_dir), renderer_factory=tiny.tiny_renderer, weights_check=tiny.check_tiny_models
        )
    }


if __name__ == "__main__":
    engine.build_backends = tiny_backends
    sys.exit(cli.main(["worker"]))
