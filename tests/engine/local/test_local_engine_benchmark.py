"""The GPU benchmark's every step, run with tiny models on the CPU (its --smoke configuration)."""

from __future__ import annotations

import re

from benchmarks import engine_gpu


def test_gpu_benchmark_runs_to_completion_on_the_cpu_configuration(fresh_dynamo: None) -> None:
    lines: list[str] = []
    engine_gpu.run(engine_gpu.SMOKE, out=lines.append)
    text = "\n".join(lines)
    for mode in ("eager", "eager true CFG (x2)", "compiled", "compiled true CFG (x2)"):
        assert re.search(rf"^{re.escape(mode)} +64x64 +\d+\.\d+", text, re.MULTILINE), mode
    assert re.search(r"^compiled +48x80 ", text, re.MULTILINE)
    assert "fp8 weight-only eager" in text and "fp8 weight-only compiled" in text
    assert "floor" in text and "true CFG cost: eager step x" in text
    # The second size reused the warm-up's graphs (dynamic shapes).
    assert re.search(r"compile warm-up: [\d.]+ s, \d+ graphs; graphs compiled after it \(other size\): 0$", text, re.M)
    assert "other models' weights (counted): T5-XXL 8.9 GiB" in text
