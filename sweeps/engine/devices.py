"""Which GPUs each local sweep worker sees: `--gpus 0,1,2,3` split evenly over `--workers`, handed to each worker as
its CUDA_VISIBLE_DEVICES (so a worker's phases, and a multi-device phase's ranks, see only their share)."""

from __future__ import annotations

from sweeps.config import ConfigError
from sweeps.config.schema import gpu_ids


def worker_devices(gpus: str, workers: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each of `workers` workers: consecutive, equal shares of `gpus`."""
    ids = gpu_ids(gpus)
    if workers > len(ids) or len(ids) % workers:
        count = f"{len(ids)} GPU" + ("s" if len(ids) > 1 else "")
        raise ConfigError(f"--workers {workers} cannot share --gpus {gpus} evenly ({count}): give a number of "
                          f"workers that divides {len(ids)} (default: {len(ids)}, one GPU each)")
    share = len(ids) // workers
    return [",".join(ids[index * share:(index + 1) * share]) for index in range(workers)]


def worker_environments(environment: dict, gpus: str | None, workers: int) -> list[dict]:
    """Each worker's environment: `environment`, with its share of `gpus` as CUDA_VISIBLE_DEVICES (unchanged
    without `gpus`)."""
    if not gpus:
        return [environment] * workers
    return [{**environment, "CUDA_VISIBLE_DEVICES": share} for share in worker_devices(gpus, workers)]
