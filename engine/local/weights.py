"""The local engine's model files: where they live under the models directory, download and check.

At run time the engine reads only these local paths. ``download`` fetches them from the Hugging Face
Hub (FLUX.1-dev is gated: the operator's token must belong to an account that accepted its licence)
or, for facexlib's face models, from the release URLs facexlib itself loads. Every file is checked
against a pinned sha256 where one is published, otherwise against the hash the Hub publishes for it;
what was verified is written to ``weights.lock.json`` so ``check`` can compare sizes (and, with
``deep=True``, hashes) later without the network. Files are fetched smallest first, so a wrong URL or
a refused licence shows up before the 34 GB of FLUX, and the EVA-CLIP pickle is converted to
safetensors on arrival so the engine never unpickles anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.safety.classifier import DEFAULT_MODEL as SAFETY_MODEL

logger = logging.getLogger(__name__)

FLUX_DIR = "flux1-dev"
PULID_FILE = "pulid/pulid_flux_v0.9.1.safetensors"
EVA_SOURCE = "EVA02_CLIP_L_336_psz14_s6B.pt"
EVA_VISUAL = "EVA02_CLIP_L_336_psz14_s6B.visual.safetensors"
EVA_FILE = f"eva-clip/{EVA_VISUAL}"
ANTELOPE_DIR = "antelopev2"
FACE_PARSER_DIR = "facexlib"
FACE_PARSER_FILE = "parsing_bisenet.pth"
FACE_DETECTOR_FILE = "detection_Resnet50_Final.pth"
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

# A converter reads the downloaded file (first path) and writes the file the engine loads (second).
Converter = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Artifact:
    """One downloadable model: a Hub repository (or plain URLs) and the files kept from it."""

    name: str
    target: str  # directory under the models dir
    repo_id: str
    patterns: tuple[str, ...]  # files of the repository to fetch (fnmatch patterns)
    required: tuple[str, ...]  # files that must exist under ``target`` for the engine to load
    licence: str
    gated: bool = False
    urls: dict[str, str] | None = None  # files served outside the Hub, by name
    sha256: dict[str, str] | None = None  # pinned hashes by file name
    sizes: dict[str, int] | None = None  # pinned sizes by file name
    # Downloaded file -> the file made from it at download time; the downloaded one is then removed.
    converted: dict[str, str] | None = None
    optional: bool = False  # fetched by ``download``, but the engine loads without it (``check`` skips it)


def convert_eva_checkpoint(source: Path, destination: Path) -> None:
    """EVA-CLIP's training pickle -> safetensors with only the visual tower (``visual.*`` keys).

    The pickle is read once here with ``weights_only=True`` (tensors and plain containers only); the
    text tower it also holds is dropped. Key names are kept, which timm's EVA loader accepts.
    """
    import torch
    from safetensors.torch import save_file

    state = torch.load(source, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: not a state dict")
    visual = {k: v.detach().clone().contiguous() for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise WeightsError(f"{source}: no visual.* tensors in the EVA-CLIP checkpoint")
    with _staging(destination) as staging:
        part = Path(staging) / destination.name
        save_file(visual, str(part), metadata={"source": source.name})
        shutil.move(part, destination)


CONVERTERS: dict[str, Converter] = {EVA_SOURCE: convert_eva_checkpoint}

MANIFEST: tuple[Artifact, ...] = (
    # Not the engine's own: the output safety check's classifier, fetched with the engine's weights.
    Artifact(
        name=SAFETY_MODEL.name,
        target=SAFETY_MODEL.target,
        repo_id=SAFETY_MODEL.repo_id,
        patterns=SAFETY_MODEL.files,
        required=SAFETY_MODEL.files,
        licence=SAFETY_MODEL.licence,
        optional=True,
    ),
    Artifact(
        name="facexlib face models (BiSeNet parser, RetinaFace detector)",
        target=FACE_PARSER_DIR,
        repo_id="",
        patterns=(FACE_PARSER_FILE, FACE_DETECTOR_FILE),
        required=(FACE_PARSER_FILE, FACE_DETECTOR_FILE),
        licence="MIT",
        # The release assets facexlib's own init_parsing_model / init_detection_model load.
        urls={
            FACE_PARSER_FILE: "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
            FACE_DETECTOR_FILE: "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        },
        # Published in several independent public lockfiles for these exact release assets.
        sha256={
            FACE_PARSER_FILE: "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
            FACE_DETECTOR_FILE: "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        },
        sizes={FACE_PARSER_FILE: 53_289_463, FACE_DETECTOR_FILE: 109_497_761},
    ),
    Artifact(
        name="insightface antelopev2 (detector + ArcFace)",
        target=ANTELOPE_DIR,
        repo_id="DIAMONIK7777/antelopev2",
        patterns=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
        required=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
        licence="insightface models: non-commercial research use only",
        sha256={
            "scrfd_10g_bnkps.onnx": "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
            "glintr100.onnx": "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
        },
        sizes={"scrfd_10g_bnkps.onnx": 16_923_827, "glintr100.onnx": 260_665_334},
    ),
    Artifact(
        name="EVA02-CLIP-L-14-336",
        target="eva-clip",
        repo_id="QuanSun/EVA-CLIP",
        patterns=(EVA_SOURCE,),
        required=(EVA_VISUAL,),
        licence="MIT",
        sizes={EVA_SOURCE: 856_461_210},
        converted={EVA_SOURCE: EVA_VISUAL},
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
    index: int  # position among all files of this download, smallest first
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
    """The Hub operations ``download`` needs, plus plain URLs; the default talks to huggingface.co."""

    def list_files(self, repo_id: str) -> list[RemoteFile]: ...

    def fetch(self, repo_id: str, path: str, destination: Path) -> None: ...

    def fetch_url(self, url: str, destination: Path) -> None: ...


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

    def fetch_url(self, url: str, destination: Path) -> None:
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


def _read_lock(models_dir: Path) -> dict[str, dict[str, object]]:
    path = models_dir / LOCK_FILE
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


@dataclass(frozen=True)
class _Planned:
    artifact: Artifact
    file: RemoteFile


def _plan(client: Hub) -> list[_Planned]:
    """Every file to fetch, smallest first. Listing every repository first also surfaces a refused
    licence (FLUX is gated) before anything is downloaded."""
    planned: list[_Planned] = []
    for artifact in MANIFEST:
        if artifact.urls is not None:
            remote = [RemoteFile(name, (artifact.sizes or {}).get(name), None) for name in artifact.urls]
        else:
            listed = client.list_files(artifact.repo_id)
            remote = [f for f in listed if any(fnmatch.fnmatchcase(f.path, p) for p in artifact.patterns)]
        if not remote:
            raise WeightsError(f"{artifact.name}: no matching files in {artifact.repo_id}")
        planned += [_Planned(artifact, f) for f in remote]
    return sorted(planned, key=lambda p: p.file.size if p.file.size is not None else 0)


def _verified(models_dir: Path, lock: dict[str, dict[str, object]], relative: str) -> bool:
    known = lock.get(relative)
    path = models_dir / relative
    return bool(known) and path.is_file() and path.stat().st_size == (known or {}).get("size")


def _record(models_dir: Path, lock: dict[str, dict[str, object]], path: Path, sha256: str) -> None:
    lock[path.relative_to(models_dir).as_posix()] = {"size": path.stat().st_size, "sha256": sha256}
    (models_dir / LOCK_FILE).write_text(json.dumps(lock, indent=1, sort_keys=True))


def _verify(artifact: Artifact, file: RemoteFile, path: Path) -> str:
    """The file's sha256 once it matches the pinned or published hash and the pinned size; else deleted."""
    expected = (artifact.sha256 or {}).get(file.path) or file.sha256
    size = path.stat().st_size
    pinned_size = (artifact.sizes or {}).get(file.path)
    if pinned_size is not None and size != pinned_size:
        path.unlink()
        raise WeightsError(f"{path}: {size} bytes, expected {pinned_size}")
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        path.unlink()
        raise WeightsError(f"{path}: sha256 {actual} does not match the expected {expected}")
    return actual


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
    plan = _plan(client)
    for index, item in enumerate(plan, start=1):
        artifact, file = item.artifact, item.file
        base = models_dir / artifact.target
        fetched = base / file.path
        kept_name = (artifact.converted or {}).get(file.path)
        kept = base / kept_name if kept_name is not None else fetched
        if not force and _verified(models_dir, lock, kept.relative_to(models_dir).as_posix()):
            continue
        event = DownloadEvent(artifact.name, kept, index, len(plan), done=False)
        if progress is not None:
            progress(event)
        fetched.parent.mkdir(parents=True, exist_ok=True)
        source_relative = fetched.relative_to(models_dir).as_posix()
        # A source verified by an earlier download (before conversion existed) is not fetched again.
        if force or kept == fetched or not _verified(models_dir, lock, source_relative):
            if artifact.urls is not None:
                client.fetch_url(artifact.urls[file.path], fetched)
            else:
                client.fetch(artifact.repo_id, file.path, fetched)
            digest = _verify(artifact, file, fetched)
        if kept != fetched:
            CONVERTERS[file.path](fetched, kept)
            fetched.unlink()
            lock.pop(source_relative, None)
            digest = sha256_of(kept)
        _record(models_dir, lock, kept, digest)
        written.append(kept)
        if progress is not None:
            progress(DownloadEvent(artifact.name, kept, index, len(plan), done=True))
    logger.info("model download finished: %d files written", len(written))
    return written


def check(models_dir: Path, *, deep: bool = False) -> list[Problem]:
    """Missing or corrupt files; empty when the engine can load. ``deep`` re-hashes every file."""
    lock = _read_lock(models_dir)
    problems: list[Problem] = []
    for artifact in MANIFEST:
        base = models_dir / artifact.target
        for name in artifact.required:
            if not (base / name).is_file() and not artifact.optional:
                problems.append(Problem(artifact.name, base / name, "missing"))
        for name, size in (artifact.sizes or {}).items():
            path = base / name
            if name in (artifact.converted or {}):
                continue  # only the converted file is kept
            if path.is_file() and path.stat().st_size != size:
                problems.append(Problem(artifact.name, path, f"size {path.stat().st_size}, expected {size}"))
    for relative, entry in sorted(lock.items()):
        path = models_dir / relative
        artifact_name = next((a.name for a in MANIFEST if relative.startswith(a.target + "/")), relative)
        if not path.is_file():
            if any(p.path == path for p in problems):
                continue
            problems.append(Problem(artifact_name, path, "missing"))
        elif path.stat().st_size != entry["size"]:
            problems.append(Problem(artifact_name, path, f"size {path.stat().st_size}, expected {entry['size']}"))
        elif deep and sha256_of(path) != entry["sha256"]:
            problems.append(Problem(artifact_name, path, f"sha256 differs from {entry['sha256']}"))
    return problems
