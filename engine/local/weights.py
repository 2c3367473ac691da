"""The local engine's model files: where they live under the models directory, download and check.

At run time the engine reads only these local paths. ``download`` fetches them from the Hugging Face
Hub (FLUX.1-dev is gated: the operator's token must belong to an account that accepted its licence)
and checks each file's sha256 against the pinned value or, where none is pinned, the hash the Hub
publishes for the file; what it verified is written to ``weights.lock.json`` so ``check`` can compare
sizes (and, with ``deep=True``, hashes) later without the network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

FLUX_DIR = "flux1-dev"
PULID_FILE = "pulid/pulid_flux_v0.9.1.safetensors"
EVA_FILE = "eva-clip/EVA02_CLIP_L_336_psz14_s6B.pt"
ANTELOPE_DIR = "antelopev2"
FACE_PARSER_DIR = "facexlib"
LOCK_FILE = "weights.lock.json"

FLUX_SUBFOLDERS = (
    "transformer",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
)


@dataclass(frozen=True)
class Artifact:
    """One downloadable model: a Hub repository (or plain URL) and the files kept from it."""

    name: str
    target: str  # directory under the models dir
    repo_id: str
    patterns: tuple[str, ...]  # files of the repository to fetch (fnmatch patterns)
    required: tuple[str, ...]  # files that must exist under ``target`` for the engine to load
    licence: str
    gated: bool = False
    url: str | None = None  # a file served outside the Hub
    sha256: dict[str, str] | None = None  # pinned hashes by file name
    sizes: dict[str, int] | None = None  # pinned sizes by file name


MANIFEST: tuple[Artifact, ...] = (
    Artifact(
        name="FLUX.1-dev",
        target=FLUX_DIR,
        repo_id="black-forest-labs/FLUX.1-dev",
        # The diffusers layout only: the repository's single-file checkpoints duplicate it (24 GB).
        patterns=("model_index.json", *(f"{sub}/*" for sub in FLUX_SUBFOLDERS)),
        required=(
            "model_index.json",
            *(f"{sub}/config.json" for sub in ("transformer", "vae", "text_encoder", "text_encoder_2")),
            "scheduler/scheduler_config.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer_2/tokenizer_config.json",
        ),
        licence="FLUX.1 [dev] Non-Commercial License (non-commercial and non-production use)",
        gated=True,
    ),
    Artifact(
        name="PuLID-FLUX v0.9.1",
        target="pulid",
        repo_id="guozinan/PuLID",
        patterns=("pulid_flux_v0.9.1.safetensors",),
        required=("pulid_flux_v0.9.1.safetensors",),
        licence="Apache-2.0 (used with FLUX.1-dev, whose terms apply to the whole)",
    ),
    Artifact(
        name="EVA02-CLIP-L-14-336",
        target="eva-clip",
        repo_id="QuanSun/EVA-CLIP",
        patterns=("EVA02_CLIP_L_336_psz14_s6B.pt",),
        required=("EVA02_CLIP_L_336_psz14_s6B.pt",),
        licence="MIT",
        sizes={"EVA02_CLIP_L_336_psz14_s6B.pt": 856_461_210},
    ),
    Artifact(
        name="insightface antelopev2 (detector + ArcFace)",
        target=ANTELOPE_DIR,
        repo_id="DIAMONIK7777/antelopev2",
        patterns=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
        required=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
        licence="insightface models: non-commercial research use only",
    ),
    Artifact(
        name="BiSeNet face parser (facexlib)",
        target=FACE_PARSER_DIR,
        repo_id="",
        patterns=("parsing_bisenet.pth",),
        required=("parsing_bisenet.pth",),
        licence="MIT",
        url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_bisenet.pth",
    ),
)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the repository
    size: int | None
    sha256: str | None  # published by the Hub for LFS files


@dataclass(frozen=True)
class DownloadEvent:
    """Progress of ``download``: one event per file, before and after it is fetched."""

    artifact: str
    path: Path
    index: int
    total: int
    done: bool


@dataclass(frozen=True)
class Problem:
    """A missing or corrupt file, with the exact path the engine expects."""

    artifact: str
    path: Path
    reason: str  # "missing", "size ..." or "sha256 ..."


class WeightsError(Exception):
    """A download failed or a file does not match its expected hash."""


class Hub(Protocol):
    """The two Hub operations ``download`` needs; the default talks to huggingface.co."""

    def list_files(self, repo_id: str) -> list[RemoteFile]: ...

    def fetch(self, repo_id: str, path: str, destination: Path) -> None: ...


class HuggingFaceHub:
    """``Hub`` through huggingface_hub; ``endpoint`` points it at a mirror or proxy."""

    def __init__(self, token: str | None, endpoint: str | None = None) -> None:
        from huggingface_hub import HfApi

        self._token = token
        self._endpoint = endpoint
        self._api = HfApi(token=token, endpoint=endpoint)

    def list_files(self, repo_id: str) -> list[RemoteFile]:
        files = []
        for entry in self._api.list_repo_tree(repo_id, recursive=True, expand=True):
            if not hasattr(entry, "size"):
                continue  # a folder
            lfs = getattr(entry, "lfs", None)
            files.append(RemoteFile(entry.path, entry.size, lfs.sha256 if lfs is not None else None))
        return files

    def fetch(self, repo_id: str, path: str, destination: Path) -> None:
        from huggingface_hub import hf_hub_download

        with _staging(destination) as staging:
            local = hf_hub_download(repo_id, path, local_dir=staging, token=self._token, endpoint=self._endpoint)
            shutil.move(local, destination)


def _fetch_url(url: str, destination: Path) -> None:
    import urllib.request

    with _staging(destination) as staging:
        part = Path(staging) / destination.name
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        shutil.move(part, destination)


class _staging:
    """A temporary directory next to ``destination`` (same filesystem), removed afterwards."""

    def __init__(self, destination: Path) -> None:
        self._dir = destination.parent / f".{destination.name}.partial"

    def __enter__(self) -> str:
        self._dir.mkdir(parents=True, exist_ok=True)
        return str(self._dir)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _selected(artifact: Artifact, files: Iterable[RemoteFile]) -> list[RemoteFile]:
    return [f for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in artifact.patterns)]


def _read_lock(models_dir: Path) -> dict[str, dict[str, object]]:
    path = models_dir / LOCK_FILE
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


def download(
    models_dir: Path,
    hf_token: str | None,
    progress: Callable[[DownloadEvent], None] | None = None,
    *,
    hub: Hub | None = None,
    force: bool = False,
) -> list[Path]:
    """Fetch every artifact into ``models_dir``; returns the files written. Verified files are skipped."""
    client = hub if hub is not None else HuggingFaceHub(hf_token)
    models_dir.mkdir(parents=True, exist_ok=True)
    lock = _read_lock(models_dir)
    written: list[Path] = []
    for artifact in MANIFEST:
        if artifact.url is not None:
            remote = [RemoteFile(artifact.patterns[0], None, None)]
        else:
            remote = _selected(artifact, client.list_files(artifact.repo_id))
        if not remote:
            raise WeightsError(f"{artifact.name}: no matching files in {artifact.repo_id}")
        for index, file in enumerate(remote, start=1):
            destination = models_dir / artifact.target / file.path
            relative = destination.relative_to(models_dir).as_posix()
            known = lock.get(relative)
            if not force and known and destination.exists() and destination.stat().st_size == known["size"]:
                continue
            if progress is not None:
                progress(DownloadEvent(artifact.name, destination, index, len(remote), done=False))
            destination.parent.mkdir(parents=True, exist_ok=True)
            if artifact.url is not None:
                _fetch_url(artifact.url, destination)
            else:
                client.fetch(artifact.repo_id, file.path, destination)
            expected = (artifact.sha256 or {}).get(file.path) or file.sha256
            actual = sha256_of(destination)
            if expected is not None and actual != expected:
                destination.unlink()
                raise WeightsError(f"{destination}: sha256 {actual} does not match the expected {expected}")
            size = destination.stat().st_size
            pinned_size = (artifact.sizes or {}).get(file.path)
            if pinned_size is not None and size != pinned_size:
                destination.unlink()
                raise WeightsError(f"{destination}: {size} bytes, expected {pinned_size}")
            lock[relative] = {"size": size, "sha256": actual}
            (models_dir / LOCK_FILE).write_text(json.dumps(lock, indent=1, sort_keys=True))
            written.append(destination)
            if progress is not None:
                progress(DownloadEvent(artifact.name, destination, index, len(remote), done=True))
    logger.info("model download finished: %d files written", len(written))
    return written


def check(models_dir: Path, *, deep: bool = False) -> list[Problem]:
    """Missing or corrupt files; empty when the engine can load. ``deep`` re-hashes every file."""
    lock = _read_lock(models_dir)
    problems: list[Problem] = []
    for artifact in MANIFEST:
        base = models_dir / artifact.target
        for name in artifact.required:
            if not (base / name).is_file():
                problems.append(Problem(artifact.name, base / name, "missing"))
        for name, size in (artifact.sizes or {}).items():
            path = base / name
            if path.is_file() and path.stat().st_size != size:
                problems.append(Problem(artifact.name, path, f"size {path.stat().st_size}, expected {size}"))
    for relative, entry in sorted(lock.items()):
        path = models_dir / relative
        artifact_name = next((a.name for a in MANIFEST if relative.startswith(a.target + "/")), relative)
        if not path.is_file():
            problems.append(Problem(artifact_name, path, "missing"))
        elif path.stat().st_size != entry["size"]:
            problems.append(Problem(artifact_name, path, f"size {path.stat().st_size}, expected {entry['size']}"))
        elif deep and sha256_of(path) != entry["sha256"]:
            problems.append(Problem(artifact_name, path, f"sha256 differs from {entry['sha256']}"))
    return problems
