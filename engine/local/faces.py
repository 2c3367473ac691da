"""Face analysis for PuLID: insightface detection + ArcFace embedding, alignment, background whitening."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from engine.errors import NoFaceError

logger = logging.getLogger(__name__)

# The five landmarks (eyes, nose, mouth corners) of an FFHQ-aligned 512x512 face.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
ALIGNED_SIZE = 512
# CelebAMask-HQ classes whitened before EVA-CLIP: background, ears, earring, neck, necklace, cloth, hat.
# Skin, brows, eyes, glasses, nose, mouth, lips and hair keep the crop's grey levels.
BACKGROUND_LABELS = (0, 7, 8, 9, 14, 15, 16, 18)


@dataclass(frozen=True)
class DetectedFace:
    """The largest face of one photo."""

    embedding: np.ndarray = field(repr=False)  # raw (unnormalised) ArcFace vector, float32 (512,)
    aligned: np.ndarray = field(repr=False)  # FFHQ-aligned RGB crop, uint8 (512, 512, 3)
    box: tuple[float, float, float, float]


class FaceAnalyzer(Protocol):
    def analyze(self, image: np.ndarray) -> DetectedFace:
        """Find the largest face in an RGB uint8 image; raise NoFaceError when there is none."""
        ...


class LandmarkDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
        """Every face in an RGB uint8 image: its box (x1, y1, x2, y2) and five landmarks (5, 2)."""
        ...


class FaceParser(Protocol):
    def parse(self, aligned: np.ndarray) -> np.ndarray:
        """CelebAMask-HQ class per pixel (H, W) of an aligned RGB uint8 crop."""
        ...


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Warp ``image`` so the 5 landmarks land on the FFHQ template (similarity transform)."""
    import cv2

    target = FFHQ_TEMPLATE_512 * (size / ALIGNED_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), target, method=cv2.LMEDS)
    if matrix is None:
        raise NoFaceError("face landmarks are degenerate; cannot align the face")
    warped: np.ndarray = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(135, 133, 132),
    )
    return warped


def whiten_background(aligned: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """EVA-CLIP input: the face's grey levels (3 equal channels) with non-face classes set to white.

    Returns float32 (H, W, 3) in [0, 1]. Grey removes skin tone and lighting colour that the ArcFace
    features already describe; white removes the background and clothes.
    """
    rgb = aligned.astype(np.float32) / 255.0
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    background = np.isin(labels, BACKGROUND_LABELS)
    grey = np.where(background, 1.0, grey).astype(np.float32)
    return np.repeat(grey[..., None], 3, axis=2)


def providers_for(device: Literal["cpu", "cuda"]) -> list[str]:
    """onnxruntime execution providers; CUDA falls back to the CPU if its provider cannot load."""
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InsightFaceAnalyzer:
    """antelopev2 (SCRFD-10G detector + ArcFace R100) loaded from a local directory.

    Where this differs from the reference pipeline, on purpose:

    - The reference takes ArcFace from insightface's largest face but aligns the EVA-CLIP crop on
      facexlib's face nearest the centre, so a group photo can mix two people. Here the largest face
      gives both.
    - Faces whose box is narrower than ``min_face_px`` are refused (the reference has no floor): ArcFace
      on a few dozen pixels describes blur, not a person.

    As in the reference, when SCRFD finds no face a second detector (``fallback``: facexlib's
    RetinaFace, which also finds some large close-ups SCRFD misses at 640 px) supplies the landmarks,
    and ArcFace runs on the aligned 512 px crop itself.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        device: Literal["cpu", "cuda"] = "cpu",
        det_size: int = 640,
        min_face_px: int = 64,
        fallback: LandmarkDetector | None = None,
    ) -> None:
        import onnxruntime
        from insightface.app import FaceAnalysis

        options = onnxruntime.SessionOptions()
        # Idle onnxruntime threads otherwise spin for a while after each run, stealing the cores that
        # torch needs right after face analysis.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._app: Any = FaceAnalysis(
            name=str(model_dir),
            allowed_modules=["detection", "recognition"],
            providers=providers_for(device),
            sess_options=options,
        )
        self._app.prepare(ctx_id=0 if device == "cuda" else -1, det_size=(det_size, det_size))
        self._min_face_px = min_face_px
        self._fallback = fallback

    def _check_size(self, box: tuple[float, float, float, float]) -> None:
        x1, y1, x2, y2 = box
        side = min(x2 - x1, y2 - y1)
        if side < self._min_face_px:
            raise NoFaceError(f"largest face is {side:.0f}px, below the {self._min_face_px}px minimum")

    def _from_fallback(self, image: np.ndarray) -> DetectedFace:
        """No face for SCRFD: the fallback detector's largest face, ArcFace on its aligned crop."""
        found = self._fallback.detect(image) if self._fallback is not None else []
        if not found:
            raise NoFaceError("no face detected in the photo")
        (x1, y1, x2, y2), landmarks = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        box = (float(x1), float(y1), float(x2), float(y2))
        self._check_size(box)
        aligned = align_face(image, np.asarray(landmarks, dtype=np.float32))
        # ArcFace reads BGR; on the 512 px crop (resized to its 112 px input), as the reference does.
        embedding = self._app.models["recognition"].get_feat(np.ascontiguousarray(aligned[..., ::-1]))[0]
        logger.info("insightface found no face; embedding taken from the fallback detector's aligned crop")
        return DetectedFace(embedding=np.asarray(embedding, dtype=np.float32), aligned=aligned, box=box)

    def analyze(self, image: np.ndarray) -> DetectedFace:
        bgr = np.ascontiguousarray(image[..., ::-1])
        with warnings.catch_warnings():
            # insightface's ArcFace crop uses a scikit-image API deprecated in 0.26: harmless, and once
            # per photo it would only fill the log.
            warnings.filterwarnings("ignore", message="`estimate` is deprecated", category=FutureWarning)
            faces = self._app.get(bgr)
        if not faces:
            return self._from_fallback(image)

        def area(face: Any) -> float:
            x1, y1, x2, y2 = face.bbox
            return float((x2 - x1) * (y2 - y1))

        face = max(faces, key=area)
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        self._check_size((x1, y1, x2, y2))
        if face.embedding is None or face.kps is None:
            raise NoFaceError("the detector gave no landmarks or embedding for the face")
        return DetectedFace(
            embedding=np.asarray(face.embedding, dtype=np.float32),
            aligned=align_face(image, np.asarray(face.kps)),
            box=(x1, y1, x2, y2),
        )


class RetinaFaceDetector:
    """facexlib's RetinaFace-R50, ``detection_Resnet50_Final.pth`` in ``weights_dir``; needs torchvision.

    The reference pipeline's alignment detector, here only the fallback when SCRFD finds no face. The
    0.97 confidence threshold is the one facexlib's face helper uses.
    """

    def __init__(self, weights_dir: Path, *, device: str) -> None:
        from facexlib.detection import init_detection_model  # type: ignore[import-not-found, unused-ignore]

        self._net = init_detection_model(
            "retinaface_resnet50", half=False, device=device, model_rootpath=str(weights_dir)
        )
        self._net.eval()

    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
        import torch

        with torch.no_grad():
            rows = self._net.detect_faces(np.ascontiguousarray(image[..., ::-1]), 0.97)
        return [
            ((float(r[0]), float(r[1]), float(r[2]), float(r[3])), np.asarray(r[5:15], dtype=np.float32).reshape(5, 2))
            for r in rows
        ]


class BiSeNetParser:
    """facexlib's BiSeNet face parser, ``parsing_bisenet.pth`` in ``weights_dir``; needs torchvision."""

    def __init__(self, weights_dir: Path, *, device: str) -> None:
        from facexlib.parsing import init_parsing_model  # type: ignore[import-not-found, unused-ignore]

        self._device = device
        self._net = init_parsing_model(model_name="bisenet", device=device, model_rootpath=str(weights_dir))
        self._net.eval()

    def parse(self, aligned: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(aligned).float().div(255).permute(2, 0, 1)[None].to(self._device)
        mean = torch.tensor([0.485, 0.456, 0.406], device=self._device)[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225], device=self._device)[:, None, None]
        with torch.no_grad():
            logits = self._net((x - mean) / std)[0]
        labels: np.ndarray = logits.argmax(dim=1)[0].cpu().numpy()
        return labels
