"""The GPU worker's face judge: insightface's SCRFD detector and ArcFace recognizer (the local engine's antelopev2)."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.judge.face import Box, Embedding, Face, Landmarks, Point


class ArcFaceJudge:
    """SCRFD detection with 5 keypoints and ArcFace embeddings compared by cosine distance.

    Takes a prepared ``insightface.app.FaceAnalysis`` (so a worker can share the one the local engine
    loaded) or builds one from a model directory. ArcFace's raw vectors are kept as they come; the
    distance normalises them. The match distance of 0.65 (cosine similarity 0.35) is the usual
    same-person threshold of ArcFace R100 models, not measured here: the antelopev2 weights cannot be
    fetched in the test environment. Note that insightface's pretrained models are licensed for
    non-commercial research only; the dlib judge is the default for that reason.
    """

    match_distance = 0.65

    def __init__(self, app: Any, *, name: str = "arcface-antelopev2", confident_score: float = 0.6) -> None:
        if "recognition" not in app.models:
            raise ValueError("the face analysis app has no recognition model")
        self.name = name
        self._app = app
        self._recognizer = app.models["recognition"]
        self._confident_score = confident_score
        self._lock = threading.Lock()

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        *,
        device: Literal["cpu", "cuda"] = "cpu",
        det_size: int = 640,
        name: str = "arcface-antelopev2",
    ) -> ArcFaceJudge:
        """Load the detector and recognizer of a local antelopev2-style directory (never downloads)."""
        from insightface.app import FaceAnalysis

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        app = FaceAnalysis(name=str(model_dir), allowed_modules=["detection", "recognition"], providers=providers)
        app.prepare(ctx_id=0 if device == "cuda" else -1, det_size=(det_size, det_size))
        return cls(app, name=name)

    def detect(self, image: np.ndarray) -> list[Face]:
        bgr = _bgr(image)
        with self._lock:
            boxes, keypoints = self._app.det_model.detect(bgr, max_num=0, metric="default")
        faces = []
        for index in range(boxes.shape[0]):
            x1, y1, x2, y2, score = (float(v) for v in boxes[index][:5])
            if keypoints is None:
                continue
            points: list[Point] = [(float(x), float(y)) for x, y in keypoints[index]]
            faces.append(
                Face(
                    box=Box(x1, y1, x2, y2),
                    landmarks=_landmarks(points),
                    score=score,
                    confident=score >= self._confident_score,
                )
            )
        return sorted(faces, key=lambda face: face.box.area, reverse=True)

    def embed(self, image: np.ndarray, face: Face) -> Embedding:
        from insightface.app.common import Face as InsightFace

        target = InsightFace(
            bbox=np.array([face.box.left, face.box.top, face.box.right, face.box.bottom], dtype=np.float32),
            kps=np.array(face.landmarks.points, dtype=np.float32),
            det_score=face.score,
        )
        with self._lock, warnings.catch_warnings():
            # insightface's ArcFace crop uses a scikit-image API deprecated in 0.26: harmless.
            warnings.filterwarnings("ignore", message="`estimate` is deprecated", category=FutureWarning)
            vector = self._recognizer.get(_bgr(image), target)
        return Embedding(judge=self.name, vector=np.asarray(vector, dtype=np.float32).ravel())

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        if norms == 0.0:
            return 1.0
        return 1.0 - float(a @ b) / norms


def _bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[..., ::-1])


def _landmarks(points: list[Point]) -> Landmarks:
    """SCRFD's 5 points: the two eyes, the nose tip, the two mouth corners."""
    left, right = sorted(points[:2])
    return Landmarks(left_eye=left, right_eye=right, nose=points[2], points=tuple(points))
