"""The GPU recipe: tokens/s, peak memory and model FLOPs utilisation (MFU) of fine-tuning XLM-R large (random
weights from its configuration: nothing is downloaded) on token tagging in bf16, at one effective batch, split as
the paper's micro-batch 4 x accumulation 8 and as the largest micro-batch that fits (lightning_modules/micro_batch.py,
what `train: {micro_batch: auto}` picks), each with and without torch.compile.

    python benchmarks/gpu.py                         # XLM-R large, effective batch 32, 256 tokens, on the GPU
    python benchmarks/gpu.py --size tiny --steps 3   # the same code at a tiny size (what the test runs, on CPU)

Every step trains on `--effective-batch` rows of `--max-length` random tokens, every token labelled, through the
tagging format's head and loss, with each micro-batch's loss scaled to its share of the effective batch's tokens,
fused AdamW, under bf16 autocast. The first `--warmup` steps (compiling included) are left out of the rate. MFU:
(6 x parameters outside the embeddings + 12 x layers x hidden x length) FLOPs per token x tokens/s over the
device's dense bf16 peak (`--peak-tflops`, else known for H100/H200/A100; none on CPU). Each variant runs in a
fresh process. Writes benchmarks/results/gpu-<size>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SIZES = {  # XLM-R large's configuration, and a tiny one for tests
    "large": {"vocab_size": 250002, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096},
    "tiny": {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128},
}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, SXM
LABELS = 7  # PAN-X's tag set


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    parser.add_argument("--effective-batch", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=4, help="the paper's micro-batch")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps measured after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both")
    parser.add_argument("--precision", choices=("bf16-mixed", "32-true"), default="bf16-mixed")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, for MFU")
    return parser.parse_args()


def build(p: dict):
    """A TaskModule of XLM-R at `p["size"]` with random weights and a tagging head, on the device."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from lightning_modules.formats import get_format
    from lightning_modules.task_module import TaskModule

    torch.manual_seed(0)
    config = XLMRobertaConfig(max_position_embeddings=max(514, p["max_length"] + 2), **SIZES[p["size"]])
    encoder = XLMRobertaModel(config, add_pooling_layer=False)
    fmt = get_format("tagging")
    head = fmt.build_head(encoder, None, [str(i) for i in range(LABELS)])
    module = TaskModule(encoder, head, fmt, None, config.pad_token_id)
    return module.to(device()), config


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def random_batch(rows: int, p: dict, vocab: int, generator) -> dict:
    import torch

    shape = (rows, p["max_length"])
    return {"input_ids": torch.randint(3, vocab, shape, generator=generator),
            "labels": torch.randint(0, LABELS, shape, generator=generator)}


def micro_batch_of(p: dict, module, config) -> int:
    if p["micro_batch"] != "largest":
        return p["micro_batch"]
    if device() == "cpu":  # as train: {micro_batch: auto} on CPU: the whole effective batch at this size
        return p["effective_batch"]
    import torch

    from lightning_modules.micro_batch import largest_micro_batch

    generator = torch.Generator().manual_seed(1)
    return largest_micro_batch(module, lambda rows: random_batch(rows, p, config.vocab_size, generator),
                               p["effective_batch"], p["precision"])


def child(p: dict) -> dict:
    import torch

    module, config = build(p)
    micro = micro_batch_of(p, module, config)
    accumulate = p["effective_batch"] // micro
    if p["compile"]:
        module.encoder.compile()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=True)
    autocast = torch.autocast(device(), dtype=torch.bfloat16, enabled=p["precision"] == "bf16-mixed")
    generator = torch.Generator().manual_seed(0)
    cuda = device() == "cuda"
    tokens = 0
    with _common.PeakMemory(cuda=cuda) as memory:
        for step in range(p["warmup"] + p["steps"]):
            if step == p["warmup"]:
                if cuda:
                    torch.cuda.synchronize()
                start, tokens = time.perf_counter(), 0
            batches = [random_batch(micro, p, config.vocab_size, generator) for _ in range(accumulate)]
            total = sum(module.fmt.loss_units(b) for b in batches)
            for batch in batches:
                batch = {k: v.to(device(), non_blocking=True) for k, v in batch.items()}
                with autocast:
                    loss = module.fmt.step(module.encoder, module.head, batch, module.pad_id).loss
                # the micro-batch's share of the effective batch's mean over its tokens
                (loss * (module.fmt.loss_units(batch) / total)).backward()
                tokens += batch["input_ids"].numel()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    rate = tokens / seconds
    embeddings = sum(p.numel() for p in module.encoder.embeddings.parameters())
    parameters = sum(p.numel() for p in module.parameters())
    flops_per_token = 6 * (parameters - embeddings) + 12 * config.num_hidden_layers * config.hidden_size * \
        p["max_length"]
    peak = p["peak_tflops"] or (next((v for k, v in PEAK_BF16_TFLOPS.items() if k in torch.cuda.get_device_name()),
                                     None) if cuda else None)
    return {"micro_batch": micro, "accumulate": accumulate, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": rate, "flops_per_token": flops_per_token,
            "mfu": rate * flops_per_token / (peak * 1e12) if peak else None, "peak_tflops": peak,
            "parameters": parameters, **memory.as_dict()}


def main() -> None:
    args = parse_args()
    base = {"size": args.size, "effective_batch": args.effective_batch, "max_length": args.max_length,
            "steps": args.steps, "warmup": args.warmup, "precision": args.precision, "peak_tflops": args.peak_tflops}
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    rows = []
    for compiled in compiles:
        for micro in (args.micro_batch, "largest"):
            result = _common.run_child(__file__, {**base, "micro_batch": micro, "compile": compiled})
            rows.append({"variant": f"micro {result['micro_batch']} x {result['accumulate']}"
                                    + (" (largest)" if micro == "largest" else "") + (", compiled" if compiled else ""),
                         **result})
            print(f"  {rows[-1]['variant']}: {result['tokens_per_s']:,.0f} tokens/s", flush=True)
    print(f"\nXLM-R {args.size} (random weights), tagging, {args.precision}, effective batch {args.effective_batch} x "
          f"{args.max_length} tokens, {device()}; {args.steps} steps after {args.warmup} of warm-up")
    _common.print_table(rows, [("variant", "variant", ""), ("tokens_per_s", "tokens/s", ",.0f"),
                               ("mfu", "MFU", ".1%"), ("cuda_peak_allocated_mib", "CUDA peak MiB", ",.0f"),
                               ("peak_rss_mib", "peak RSS MiB", ",.0f")])
    _common.write_results(f"gpu-{args.size}", {"settings": vars(args), "table": rows})


if __name__ == "__main__":
    _common.main_or_child(main, child)
