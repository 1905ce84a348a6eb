"""benchmarks/gpu.py at a tiny size on the CPU: the paper's split and the largest micro-batch train on the same
number of tokens, and the FLOPs per token are those counted by hand. No timing is asserted (benchmarks/README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu as benchmark  # noqa: E402

# tiny: 2 layers of hidden 64, feed-forward 128: per layer q, k, v, o 4 x (64 x 64 + 64), feed-forward
# 64 x 128 + 128 and 128 x 64 + 64, two layer norms 2 x 128; the tagging head 64 x 7 + 7
NON_EMBEDDING = 2 * (4 * (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64) + 2 * 128) + 64 * 7 + 7
LENGTH, STEPS, EFFECTIVE = 16, 2, 8


def run(micro_batch):
    return benchmark.child({"size": "tiny", "effective_batch": EFFECTIVE, "max_length": LENGTH, "steps": STEPS,
                            "warmup": 1, "precision": "bf16-mixed", "peak_tflops": None, "micro_batch": micro_batch,
                            "compile": False})


def test_tiny_recipe_on_cpu():
    paper, largest = run(2), run("largest")
    assert (paper["micro_batch"], paper["accumulate"]) == (2, 4)
    assert (largest["micro_batch"], largest["accumulate"]) == (EFFECTIVE, 1)  # on CPU: the whole effective batch
    for result in (paper, largest):
        assert result["tokens"] == STEPS * EFFECTIVE * LENGTH
        assert result["flops_per_token"] == 6 * NON_EMBEDDING + 12 * 2 * 64 * LENGTH
        assert result["tokens_per_s"] > 0 and result["peak_rss_mib"] > 0
        assert result["mfu"] is None  # no known peak on a CPU
