"""The largest micro-batch that trains on the GPU (TrainConfig.micro_batch: auto): forward and backward passes of
the longest training examples, with the optimizer's state in memory beside them, at falling sizes until one fits."""

from __future__ import annotations

import torch

PRECISION_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def divisors(number: int) -> list[int]:
    """Every divisor of `number`, largest first."""
    return [d for d in range(number, 0, -1) if number % d == 0]


def largest_micro_batch(module, batch_of, effective: int, precision: str) -> int:
    """The largest divisor of `effective` for which `module` (a TaskModule) takes a training step on `batch_of(size)`
    (a CPU batch) within the GPU's memory; 1 when none does."""
    device = torch.device("cuda")
    module.to(device).train()
    dtype = next((d for prefix, d in PRECISION_DTYPES.items() if precision.startswith(prefix + "-")), None)
    # AdamW keeps two values per trained parameter: hold as much while probing
    state = [torch.zeros_like(p) for p in module.parameters() if p.requires_grad for _ in range(2)]
    try:
        for size in divisors(effective):
            if _fits(module, batch_of(size), device, dtype):
                return size
        return 1
    finally:
        del state
        torch.cuda.empty_cache()


def _fits(module, batch: dict, device, dtype) -> bool:
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    try:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = module.fmt.step(module.encoder, module.head, batch, module.pad_id).loss
        loss.backward()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        module.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
