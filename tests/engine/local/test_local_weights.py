"""The model manifest: download order, sha256 pins, EVA-CLIP conversion, and the offline check."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from engine.local import weights
from engine.local.weights import RemoteFile, WeightsError, check, download

EVA_REPO = "QuanSun/EVA-CLIP"


class FakeHub:
    """Serves files from a local folder per repository (with the sha256 the Hub would publish) and URLs."""

    def __init__(self, root: Path, urls: dict[str, bytes], corrupt: str | None = None) -> None:
        self.root = root
        self.urls = urls
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

    def fetch_url(self, url: str, destination: Path) -> None:
        self.fetched.append(url)
        destination.write_bytes(self.urls[url])
        if url.endswith(f"/{self.corrupt}"):
            destination.write_bytes(b"flipped bits")


def eva_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "visual.pos_embed": torch.randn(1, 5, 8, generator=g),
        "visual.blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=g).half(),
        "text.token_embedding.weight": torch.randn(10, 8, generator=g),
        "logit_scale": torch.tensor(4.6),
    }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """A hub with stand-in files of distinct sizes; the manifest's pins are replaced by the stand-ins' own."""
    root = tmp_path / "hub"
    urls: dict[str, bytes] = {}
    artifacts = []
    for artifact in weights.MANIFEST:
        pins: dict[str, str] = {}
        sizes: dict[str, int] = {}
        if artifact.urls is not None:
            for number, (name, url) in enumerate(artifact.urls.items(), start=1):
                urls[url] = f"{name}:".encode() * number
                pins[name], sizes[name] = hashlib.sha256(urls[url]).hexdigest(), len(urls[url])
        else:
            base = root / artifact.repo_id
            base.mkdir(parents=True, exist_ok=True)
            for name in artifact.patterns if artifact.converted else artifact.required:
                data = f"{artifact.name}:{name}".encode() * 40
                if name == weights.EVA_SOURCE:
                    torch.save(eva_state(), base / name)
                    data = (base / name).read_bytes()
                (base / name).parent.mkdir(parents=True, exist_ok=True)
                (base / name).write_bytes(data)
                if artifact.sha256 is not None:
                    pins[name] = hashlib.sha256(data).hexdigest()
                if artifact.sizes is not None:
                    sizes[name] = len(data)
            (base / "unwanted.bin").write_bytes(b"not in the manifest")
        artifacts.append(dataclasses.replace(artifact, sha256=pins or artifact.sha256, sizes=sizes or artifact.sizes))
    flux = root / "black-forest-labs/FLUX.1-dev"
    (flux / "transformer/diffusion_pytorch_model.safetensors").write_bytes(b"w" * 100_000)
    monkeypatch.setattr(weights, "MANIFEST", tuple(artifacts))
    return FakeHub(root, urls)


def test_download_fetches_smallest_first_verifies_and_check_passes(tmp_path: Path, hub: FakeHub) -> None:
    models = tmp_path / "models"
    assert {p.reason for p in check(models)} == {"missing"}
    events: list[weights.DownloadEvent] = []
    written = download(models, "hf_token", events.append, hub=hub)
    assert models / weights.PULID_FILE in written
    assert (
        models / weights.FLUX_DIR / "transformer/diffusion_pytorch_model.safetensors"
    ).read_bytes() == b"w" * 100_000
    assert not any("unwanted" in f for f in hub.fetched)
    assert (models / weights.FACE_PARSER_DIR / weights.FACE_PARSER_FILE).read_bytes() == b"parsing_bisenet.pth:"
    assert [e.done for e in events[:2]] == [False, True]
    started = [e for e in events if not e.done]
    assert [e.index for e in started] == list(range(1, len(started) + 1)) and started[0].total == len(started)
    # Smallest first: the face models before the big transformer file, which comes last.
    assert started[0].artifact.startswith("facexlib")
    assert started[-1].path.name == "diffusion_pytorch_model.safetensors"
    assert check(models) == [] and check(models, deep=True) == []

    # Verified files are not fetched again.
    again = FakeHub(hub.root, hub.urls)
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


def test_eva_checkpoint_becomes_a_visual_only_safetensors_file(tmp_path: Path, hub: FakeHub) -> None:
    from safetensors.torch import load_file

    models = tmp_path / "models"
    download(models, None, hub=hub)
    converted = models / weights.EVA_FILE
    assert not (converted.parent / weights.EVA_SOURCE).exists()  # the pickle is not kept
    loaded = load_file(str(converted))
    expected = {k: v for k, v in eva_state().items() if k.startswith("visual.")}
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor)
    assert weights.EVA_FILE in weights._read_lock(models)

    # An install that holds the verified pickle from before is converted without fetching it again.
    older = tmp_path / "older"
    (older / "eva-clip").mkdir(parents=True)
    shutil.copyfile(hub.root / EVA_REPO / weights.EVA_SOURCE, older / "eva-clip" / weights.EVA_SOURCE)
    source = older / "eva-clip" / weights.EVA_SOURCE
    weights._record(older, {}, source, weights.sha256_of(source))
    fresh = FakeHub(hub.root, hub.urls)
    download(older, None, hub=fresh)
    assert f"{EVA_REPO}/{weights.EVA_SOURCE}" not in fresh.fetched
    assert torch.equal(load_file(str(older / weights.EVA_FILE))["visual.pos_embed"], expected["visual.pos_embed"])


def test_conversion_refuses_a_checkpoint_without_a_visual_tower(tmp_path: Path) -> None:
    torch.save({"text.weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(WeightsError, match="visual"):
        weights.convert_eva_checkpoint(tmp_path / "x.pt", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupt_download_is_deleted_and_raises(tmp_path: Path, hub: FakeHub) -> None:
    models = tmp_path / "models"
    hub.corrupt = "pulid_flux_v0.9.1.safetensors"
    with pytest.raises(WeightsError, match="sha256"):
        download(models, None, hub=hub)
    assert not (models / weights.PULID_FILE).exists()


def test_pinned_hash_mismatch_is_refused(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hub publishes a hash for the served file, but the pin wins: a mirror serving other bytes fails.
    artifacts = tuple(
        dataclasses.replace(a, sha256={**(a.sha256 or {}), "glintr100.onnx": "0" * 64})
        if a.target == weights.ANTELOPE_DIR
        else a
        for a in weights.MANIFEST
    )
    monkeypatch.setattr(weights, "MANIFEST", artifacts)
    models = tmp_path / "models"
    with pytest.raises(WeightsError, match=r"glintr100\.onnx: sha256 \w+ does not match the expected 0000"):
        download(models, None, hub=hub)
    assert not (models / weights.ANTELOPE_DIR / "glintr100.onnx").exists()
    # The smaller files fetched before it stay verified.
    assert (models / weights.FACE_PARSER_DIR / weights.FACE_PARSER_FILE).is_file()


def test_pinned_size_mismatch_raises(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = tuple(
        dataclasses.replace(a, sizes={"pulid_flux_v0.9.1.safetensors": 3}) if a.target == "pulid" else a
        for a in weights.MANIFEST
    )
    monkeypatch.setattr(weights, "MANIFEST", artifacts)
    with pytest.raises(WeightsError, match="expected 3"):
        download(tmp_path / "models", None, hub=hub)


def test_manifest_pins_and_sources() -> None:
    targets = {a.target for a in weights.MANIFEST}
    assert weights.FLUX_DIR in targets and weights.ANTELOPE_DIR in targets
    assert weights.PULID_FILE.split("/")[0] in targets and weights.EVA_FILE.split("/")[0] in targets
    flux = next(a for a in weights.MANIFEST if a.target == weights.FLUX_DIR)
    assert flux.gated and "Non-Commercial" in flux.licence
    antelope = next(a for a in weights.MANIFEST if a.target == weights.ANTELOPE_DIR)
    assert "non-commercial" in antelope.licence
    assert antelope.sha256 == {
        "glintr100.onnx": "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
        "scrfd_10g_bnkps.onnx": "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
    }
    facexlib = next(a for a in weights.MANIFEST if a.target == weights.FACE_PARSER_DIR)
    assert facexlib.urls is not None and facexlib.sha256 is not None
    # The parser is BiSeNet from release v0.2.0 (v0.2.2 holds ParseNet), as facexlib loads it.
    assert facexlib.urls[weights.FACE_PARSER_FILE].endswith("/v0.2.0/parsing_bisenet.pth")
    assert facexlib.urls[weights.FACE_DETECTOR_FILE].endswith("/v0.1.0/detection_Resnet50_Final.pth")
    assert set(facexlib.sha256) == set(facexlib.urls)
    eva = next(a for a in weights.MANIFEST if a.converted)
    assert eva.required == (weights.EVA_VISUAL,) and weights.EVA_FILE.endswith(".safetensors")


def test_hugging_face_hub_client_builds_without_network() -> None:
    client = weights.HuggingFaceHub("hf_x", endpoint="http://127.0.0.1:9")
    assert client._endpoint == "http://127.0.0.1:9"
