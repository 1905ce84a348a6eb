"""Benchmark BUCC-style bitext mining (lightning_modules/metrics/retrieval.py: bucc_mine) on random unit
embeddings: wall time and peak memory of one mutual cosine k-NN pass, ratio-margin scoring and max retrieval.

    python benchmarks/retrieval_mining.py --n 50000 --dim 1024

The similarity matrix is never materialised: at the default 200,000 x 200,000 it would take 160 GB in float32.
Prints a table and writes benchmarks/results/retrieval_mining.json.

    python benchmarks/retrieval_mining.py --n 20000 --against-faiss --repeats 5 --threads 1

compares one similarity product (n x n x dim) of each kind, interleaved --repeats times, in GFLOP/s: `knn` (top-k
of each query), `mutual_knn` (top-k of each query and of each key from the same product, what `bucc_mine` runs),
the bare matrix products of the same blocks (the floor: no top-k at all), the same with torch's `@` (what knn ran
before it used numpy's BLAS on the CPU), and faiss' exact flat search
(`IndexFlatIP.search`, one direction; needs faiss-cpu: `pip install -e '.[bench]'`). Ratios are medians of the
interleaved pairs. Writes benchmarks/results/retrieval_vs_faiss.json.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from lightning_modules.metrics.retrieval import (DEFAULT_BATCH, block_similarities, bucc_mine, knn,  # noqa: E402
                                                  mutual_knn)

GIB = 2 ** 30
FULL_SIZE = 200_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=FULL_SIZE, help="sentences on each side")
    parser.add_argument("--dim", type=int, default=1024, help="embedding size")
    parser.add_argument("--k", type=int, default=4, help="margin neighbourhood")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="rows per block on each side")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against-faiss", action="store_true", help="compare each product with faiss' flat search")
    parser.add_argument("--repeats", type=int, default=5, help="--against-faiss: interleaved runs of each kind")
    _common.add_threads_option(parser)
    return parser.parse_args()


def random_unit_rows(n: int, dim: int, generator: torch.Generator, device: str) -> torch.Tensor:
    rows = torch.randn(n, dim, generator=generator, device=device)
    return rows.div_(rows.norm(dim=1, keepdim=True))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux


def run(args: argparse.Namespace) -> dict:
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    source, target = (random_unit_rows(args.n, args.dim, generator, args.device) for _ in range(2))
    generate_s = time.perf_counter() - start
    rss_inputs_gib = psutil.Process().memory_info().rss / GIB
    ids = range(args.n)
    start = time.perf_counter()
    pairs = bucc_mine(source, target, ids, ids, k=args.k, batch_size=args.batch_size, device=args.device)
    mine_s = time.perf_counter() - start
    scale = (FULL_SIZE / args.n) ** 2
    return {
        "n": args.n, "dim": args.dim, "k": args.k, "batch_size": args.batch_size, "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "generate_s": generate_s, "mine_s": mine_s, "candidates": len(pairs),
        "gflops": 2 * args.n * args.n * args.dim / mine_s / 1e9,
        "input_gib": 2 * args.n * args.dim * 4 / GIB,
        "rss_after_inputs_gib": rss_inputs_gib, "peak_rss_gib": peak_rss_gib(),
        "cuda_peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB if args.device.startswith("cuda") else None,
        "dense_similarity_gib": args.n * args.n * 4 / GIB,
        "extrapolated_mine_s_at_200k": mine_s * scale,
    }


def print_table(result: dict) -> None:
    for key, value in result.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<30}{shown:>20}")


def products(source: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
    """The matrix products of knn's blocks alone (`block_similarities`, as knn runs them), without normalising or
    searching: the floor of any search."""
    buffers = {}
    for start in range(0, len(source), batch_size):
        for key_start in range(0, len(target), batch_size):
            block_similarities(source[start:start + batch_size], target[key_start:key_start + batch_size], buffers)


def torch_products(source: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
    """The same products with torch's `@` (MKL on the CPU wheels), each into a fresh result."""
    for start in range(0, len(source), batch_size):
        for key_start in range(0, len(target), batch_size):
            source[start:start + batch_size] @ target[key_start:key_start + batch_size].T


def against_faiss(args: argparse.Namespace) -> dict:
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(torch.get_num_threads())
    generator = torch.Generator().manual_seed(args.seed)
    source, target = (random_unit_rows(args.n, args.dim, generator, "cpu") for _ in range(2))

    def flat_search():
        index = faiss.IndexFlatIP(args.dim)
        index.add(target.numpy())
        index.search(source.numpy(), args.k)

    kinds = {"faiss IndexFlatIP.search": flat_search,
             "knn": lambda: knn(source, target, args.k, batch_size=args.batch_size),
             "mutual_knn (both directions)": lambda: mutual_knn(source, target, args.k, batch_size=args.batch_size),
             "matrix products alone": lambda: products(source, target, args.batch_size),
             "torch's @ alone": lambda: torch_products(source, target, args.batch_size)}
    gflop = 2 * args.n * args.n * args.dim / 1e9
    seconds = {name: [] for name in kinds}
    for repeat in range(args.repeats):
        for name, search in kinds.items():
            start = time.perf_counter()
            search()
            seconds[name].append(time.perf_counter() - start)
            print(f"  repeat {repeat + 1}/{args.repeats} {name:<30} {gflop / seconds[name][-1]:7.1f} GFLOP/s", flush=True)
    faiss_s = np.array(seconds["faiss IndexFlatIP.search"])
    rows = [{"kind": name, "seconds": float(np.median(s)), "gflops": gflop / float(np.median(s)),
             "vs_faiss": float(np.median(faiss_s / np.array(s)))} for name, s in seconds.items()]
    print(f"\none {args.n:,} x {args.n:,} x {args.dim} product per search, k = {args.k}, blocks of {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s); medians of {args.repeats}, ratios: medians of interleaved pairs")
    _common.print_table(rows, [("kind", "kind", ""), ("seconds", "s", ".2f"), ("gflops", "GFLOP/s", ".1f"),
                               ("vs_faiss", "x faiss", ".2f")])
    return {"table": rows, "seconds": seconds, "faiss": faiss.__version__}


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    if args.against_faiss:
        _common.write_results("retrieval_vs_faiss", {"settings": vars(args), **against_faiss(args)})
        return
    result = run(args)
    print_table(result)
    _common.write_results("retrieval_mining", {"settings": vars(args), "result": result})


if __name__ == "__main__":
    main()
