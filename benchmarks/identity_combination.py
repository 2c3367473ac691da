"""How two ways of combining several photos behave, on the full-size IDFormer (random weights, CPU).

Synthetic identity: each photo's features are a shared "true" feature plus independent noise (relative
size ``--noise``), and optionally one photo of someone else. Reported: cosine similarity of the
combined ID embedding to the embedding of the noise-free features, per strategy and photo count, and
the time per combination. ``python -m benchmarks.identity_combination``.
"""

from __future__ import annotations

import argparse
import time

import torch

from engine.local.id_encoder import PhotoFeatures, combine
from engine.local.idformer import IDFormer


def photo(base_id: torch.Tensor, base_hidden: list[torch.Tensor], noise: float, g: torch.Generator) -> PhotoFeatures:
    def jitter(t: torch.Tensor) -> torch.Tensor:
        return t + noise * t.std() * torch.randn(t.shape, generator=g)

    return PhotoFeatures(jitter(base_id), tuple(jitter(h) for h in base_hidden))


def identity(g: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    arcface = torch.randn(1, 512, generator=g) * 1.1  # raw ArcFace norm is about 25
    clip = torch.nn.functional.normalize(torch.randn(1, 768, generator=g), dim=-1)
    return torch.cat([arcface, clip], dim=-1), [torch.randn(1, 577, 1024, generator=g) for _ in range(5)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    idformer = IDFormer().eval()
    g = torch.Generator().manual_seed(1)
    print(f"noise {args.noise}, {args.trials} identities; cosine of (embedding - uncond) to the noise-free one")
    print(f"{'case':<28} {'mean':>7} {'tokens':>7} {'s mean':>7} {'s tokens':>8}")
    for n, outlier in ((1, False), (2, False), (4, False), (4, True)):
        scores: dict[str, list[float]] = {"mean": [], "tokens": []}
        seconds: dict[str, float] = {"mean": 0.0, "tokens": 0.0}
        for _ in range(args.trials):
            base_id, base_hidden = identity(g)
            reference = combine(idformer, [PhotoFeatures(base_id, tuple(base_hidden))], "mean")
            # Compare what the photos add on top of the input-free part (the unconditional embedding).
            clean = reference.cond - reference.uncond
            photos = [photo(base_id, base_hidden, args.noise, g) for _ in range(n)]
            if outlier:
                other_id, other_hidden = identity(g)
                photos[-1] = photo(other_id, other_hidden, args.noise, g)
            for strategy in ("mean", "tokens"):
                start = time.perf_counter()
                combined = combine(idformer, photos, strategy)  # type: ignore[arg-type]
                seconds[strategy] += (time.perf_counter() - start) / args.trials
                scores[strategy].append(cosine(combined.cond - combined.uncond, clean))
        case = f"{n} photo{'s' if n > 1 else ''}" + (", 1 of another person" if outlier else "")
        mean_score = sum(scores["mean"]) / args.trials
        token_score = sum(scores["tokens"]) / args.trials
        timing = f"{seconds['mean']:>7.2f} {seconds['tokens']:>8.2f}"
        print(f"{case:<28} {mean_score:>7.3f} {token_score:>7.3f} {timing}")


if __name__ == "__main__":
    main()
