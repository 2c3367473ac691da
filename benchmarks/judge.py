"""Face judge cost and calibration: time per photo (the enrollment gate) and per output (the likeness score)
at 512 and 1024 px, resident memory, the distances behind the default thresholds, and the safety classifier.

The photos are the ones that ship in packages (insightface's Tom Hanks and group photo, scikit-image's
astronaut). The safety classifier is timed as a ViT-B/16 at 224 px with random weights: the same compute as
the default model, whose weights are not needed to measure it.
Usage: python -m benchmarks.judge [--repeats N] [--no-safety]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import psutil
from PIL import Image

from engine.judge import DlibJudge, Embedding, Enrollment, JudgeSettings, enroll, score_output
from engine.judge.face import compare
from tests.engine.judge import photos

MIB = 2**20


def resized(image: np.ndarray, longest: int) -> np.ndarray:
    height, width = image.shape[:2]
    factor = longest / max(height, width)
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def timed(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and slowest wall time of ``repeats`` calls, in milliseconds, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times), max(times)


def speed(judge: DlibJudge, settings: JudgeSettings, repeats: int) -> None:
    identity = enroll(judge, [photos.tom()], settings)
    assert isinstance(identity, Enrollment)
    cases = [
        ("astronaut, one face", photos.astronaut()),
        ("group photo, six faces", photos.group()),
    ]
    print(
        "| image | size | detection alone | per photo (gate + embedding) | per output (score) |\n|---|---|---|---|---|"
    )
    for label, image in cases:
        for longest in (512, 1024):
            scaled = resized(image, longest)
            detect = timed(partial(judge.detect, scaled), repeats)
            gate = timed(partial(enroll, judge, [scaled], settings), repeats)
            score = timed(partial(score_output, judge, scaled, identity.embeddings), repeats)
            size = f"{scaled.shape[1]}x{scaled.shape[0]}"
            cells = " | ".join(f"{median:.0f} / {slowest:.0f} ms" for median, slowest in (detect, gate, score))
            print(f"| {label} | {size} | {cells} |")
    print("(median / slowest of the repeats; the group photo is refused before any embedding, and its output")
    print("score embeds every confident face)")


def memory(settings: JudgeSettings, repeats: int) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    judge = DlibJudge()
    loaded = process.memory_info().rss
    image = resized(photos.astronaut(), 1024)
    identity = enroll(judge, [photos.tom()], settings)
    assert isinstance(identity, Enrollment)
    for _ in range(3):
        score_output(judge, image, identity.embeddings)
    warm = process.memory_info().rss
    calls = repeats * 10
    for _ in range(calls):
        enroll(judge, [image], settings)
        score_output(judge, image, identity.embeddings)
    after = process.memory_info().rss
    print()
    print("| memory | MiB |")
    print("|---|---|")
    print(f"| resident before the judge | {before / MIB:.1f} |")
    print(f"| + loading the dlib judge | {(loaded - before) / MIB:+.1f} |")
    print(f"| + first 1024-px scores (working buffers) | {(warm - loaded) / MIB:+.1f} |")
    print(f"| + {calls} more gate and score calls at 1024 px | {(after - warm) / MIB:+.1f} |")


def calibration(judge: DlibJudge) -> None:
    """Distances between copies of one face and between different people, with the score each maps to."""
    people: dict[str, np.ndarray] = {"tom": photos.tom(), "astronaut": photos.astronaut()}
    group = photos.group()
    for index, face in enumerate(face for face in judge.detect(group) if face.confident):
        box = face.box
        margin = box.side * 0.6
        top, bottom = max(0, int(box.top - margin)), int(box.bottom + margin)
        left, right = max(0, int(box.left - margin)), int(box.right + margin)
        people[f"group {index + 1}"] = np.ascontiguousarray(group[top:bottom, left:right])

    def embedding(image: np.ndarray) -> Embedding | None:
        faces = [face for face in judge.detect(image) if face.confident] or judge.detect(image)
        return judge.embed(image, faces[0]) if faces else None

    originals = {name: embedding(image) for name, image in people.items()}
    copies: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "flip": photos.flipped,
        "rotate 10°": lambda image: photos.rotated(image, 10),
        "rotate -15°": lambda image: photos.rotated(image, -15),
        "crop": lambda image: photos.cropped(image, 0.06, 0.04, 0.94, 0.97),
        "scale x2": lambda image: photos.scaled(image, 2),
        "darken 0.5": lambda image: photos.darkened(image, 0.5),
        "blur 0.7": lambda image: photos.blurred(image, 0.7),
    }
    same: list[tuple[float, str]] = []
    for (name, image), (edit, change) in itertools.product(people.items(), copies.items()):
        reference, copy = originals[name], embedding(change(image))
        if reference is not None and copy is not None:
            same.append((judge.distance(reference.vector, copy.vector), f"{name}, {edit}"))
    different: list[tuple[float, str]] = []
    for (a, ea), (b, eb) in itertools.combinations(originals.items(), 2):
        if ea is not None and eb is not None:
            different.append((compare(judge, ea, eb).distance, f"{a} vs {b}"))
    same.sort()
    different.sort()

    def score(distance: float) -> str:
        return f"{100 * max(0.0, 1 - distance / (2 * judge.match_distance)):.0f}%"

    print()
    print(f"calibration ({judge.name}, match distance {judge.match_distance} = score 50%)")
    print("| pairs | n | distance min / median / max | score max / median / min | worst pair |")
    print("|---|---|---|---|---|")
    rows = (("same face, edited copy", same, same[-1]), ("different people", different, different[0]))
    for label, pairs, worst in rows:
        values = [distance for distance, _ in pairs]
        low, mid, high = min(values), statistics.median(values), max(values)
        print(
            f"| {label} | {len(values)} | {low:.3f} / {mid:.3f} / {high:.3f} | "
            f"{score(low)} / {score(mid)} / {score(high)} | {worst[1]} ({worst[0]:.3f}) |"
        )


def safety(repeats: int) -> None:
    try:
        import torch
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError:
        print("\nsafety classifier: transformers and torch are not installed (the `local` extra); skipped")
        return
    torch.manual_seed(0)
    model: Any = ViTForImageClassification(ViTConfig(id2label={0: "normal", 1: "nsfw"}))
    model.eval()
    process = psutil.Process()
    print()
    print(f"| safety classifier (ViT-B/16, 224 px, {torch.get_num_threads()} torch threads) | median / max |")
    print("|---|---|")
    for batch in (1, 4):
        pixels = torch.rand(batch, 3, 224, 224)

        def classify(pixels: Any = pixels) -> None:
            with torch.inference_mode():
                model(pixel_values=pixels)

        median, slowest = timed(classify, repeats)
        print(f"| {batch} image{'s' if batch > 1 else ''} | {median:.0f} / {slowest:.0f} ms |")
    resident = process.memory_info().rss / MIB
    print(f"| resident memory of this process, torch and the model loaded | {resident:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-safety", action="store_true")
    args = parser.parse_args()
    settings = JudgeSettings()
    memory(settings, args.repeats)
    judge = DlibJudge()
    print()
    speed(judge, settings, args.repeats)
    calibration(judge)
    if not args.no_safety:
        safety(args.repeats)


if __name__ == "__main__":
    main()
