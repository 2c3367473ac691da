"""The model manifest: download through a Hub double with sha256 checks, and the offline check."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from engine.local import weights
from engine.local.weights import RemoteFile, WeightsError, check, download


class FakeHub:
    """Serves files from a local folder per repository, with the sha256 the Hub would publish."""

    def __init__(self, root: Path, corrupt: str | None = None) -> None:
        self.root = root
        self.corrupt = corrupt
        self.fetched: list[str] = []

    def list_files(self, repo_id: str) -> list[RemoteFile]:
        base = self.root / repo_id
        files = []
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            data = path.read_bytes()
            files.append(RemoteFile(path.relative_to(base).as_posix(), len(data), hashlib.sha256(data).hexdigest()))
        return files

    def fetch(self, repo_id: str, path: str, destination: Path) -> None:
        self.fetched.append(f"{repo_id}/{path}")
        shutil.copyfile(self.root / repo_id / path, destination)
        if path == self.corrupt:
            destination.write_bytes(b"flipped bits")


@pytest.fixture
def hub_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hub"
    for artifact in weights.MANIFEST:
        if artifact.url is not None:
            continue
        base = root / artifact.repo_id
        for name in artifact.required:
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_bytes(f"{artifact.name}:{name}".encode())
        (base / "unwanted.bin").write_bytes(b"not in the manifest")
    (root / "black-forest-labs/FLUX.1-dev/transformer/diffusion_pytorch_model.safetensors").write_bytes(b"w")
    # The face parser comes from a plain URL: serve it from a file URL.
    parser = tmp_path / "parsing_bisenet.pth"
    parser.write_bytes(b"parser")
    artifacts = tuple(
        a if a.url is None else weights.Artifact(**{**a.__dict__, "url": parser.as_uri()}) for a in weights.MANIFEST
    )
    monkeypatch.setattr(weights, "MANIFEST", artifacts)
    # EVA's real size is pinned; the stand-in file is not 856 MB.
    eva = next(a for a in artifacts if a.sizes)
    monkeypatch.setattr(
        weights,
        "MANIFEST",
        tuple(a if a is not eva else weights.Artifact(**{**a.__dict__, "sizes": None}) for a in artifacts),
    )
    return root


def test_download_fetches_the_manifest_verifies_and_check_passes(tmp_path: Path, hub_root: Path) -> None:
    models = tmp_path / "models"
    assert {p.reason for p in check(models)} == {"missing"}
    events: list[weights.DownloadEvent] = []
    hub = FakeHub(hub_root)
    written = download(models, "hf_token", events.append, hub=hub)
    assert models / weights.PULID_FILE in written
    assert (models / weights.FLUX_DIR / "transformer/diffusion_pytorch_model.safetensors").read_bytes() == b"w"
    assert not any("unwanted" in f for f in hub.fetched)
    assert (models / weights.FACE_PARSER_DIR / "parsing_bisenet.pth").read_bytes() == b"parser"
    assert [e.done for e in events[:2]] == [False, True]
    assert check(models) == [] and check(models, deep=True) == []

    # Verified files are not fetched again.
    again = FakeHub(hub_root)
    assert download(models, "hf_token", hub=again) == [] and again.fetched == []

    # Damage is reported with exact paths.
    original = (models / weights.PULID_FILE).read_bytes()
    (models / weights.PULID_FILE).write_bytes(b"truncated")
    (models / weights.ANTELOPE_DIR / "glintr100.onnx").unlink()
    problems = {p.path: p.reason for p in check(models)}
    assert problems[models / weights.ANTELOPE_DIR / "glintr100.onnx"] == "missing"
    assert problems[models / weights.PULID_FILE].startswith("size ")
    (models / weights.PULID_FILE).write_bytes(b"x" * len(original))  # same size, other bytes
    assert any(p.reason.startswith("sha256") for p in check(models, deep=True))


def test_corrupt_download_is_deleted_and_raises(tmp_path: Path, hub_root: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(WeightsError, match="sha256"):
        download(models, None, hub=FakeHub(hub_root, corrupt="pulid_flux_v0.9.1.safetensors"))
    assert not (models / weights.PULID_FILE).exists()


def test_pinned_size_mismatch_raises(tmp_path: Path, hub_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = tuple(
        weights.Artifact(**{**a.__dict__, "sizes": {"pulid_flux_v0.9.1.safetensors": 3}}) if a.target == "pulid" else a
        for a in weights.MANIFEST
    )
    monkeypatch.setattr(weights, "MANIFEST", artifacts)
    with pytest.raises(WeightsError, match="expected 3"):
        download(tmp_path / "models", None, hub=FakeHub(hub_root))


def test_manifest_paths_are_what_the_engine_loads() -> None:
    targets = {a.target for a in weights.MANIFEST}
    assert weights.FLUX_DIR in targets and weights.ANTELOPE_DIR in targets
    assert weights.PULID_FILE.split("/")[0] in targets and weights.EVA_FILE.split("/")[0] in targets
    flux = next(a for a in weights.MANIFEST if a.target == weights.FLUX_DIR)
    assert flux.gated and "Non-Commercial" in flux.licence
    antelope = next(a for a in weights.MANIFEST if a.target == weights.ANTELOPE_DIR)
    assert "non-commercial" in antelope.licence


def test_hugging_face_hub_client_builds_without_network() -> None:
    client = weights.HuggingFaceHub("hf_x", endpoint="http://127.0.0.1:9")
    assert client._endpoint == "http://127.0.0.1:9"
