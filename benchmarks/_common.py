"""Shared by the benchmark scripts: the offline environment, fixtures repeated to a realistic size, one measured
run per child process, the machine's description, medians, the printed table and the results file.

Every comparison runs its variants interleaved (A B C, A B C, ...) in fresh child processes of one invocation, so
that load from other jobs on a shared machine falls on all of them alike, and reports the median of the repeats.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                     ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIXTURES = ROOT / "datamodules" / "fixtures"
MIB = 2 ** 20
RESULT_PREFIX = "BENCHMARK-RESULT "


def repeated_fixtures(repeat: int, train_repeat: int | None = None, only: tuple[str, ...] = ()) -> Path:
    """The bundled fixtures with every file's rows repeated `repeat` times (training files `train_repeat` times),
    in the hub layout that --data-dir reads; `only`: just the paths that start so (e.g. "google/xtreme/PAN-X"). Kept
    under benchmarks/results/data/ so that later invocations reuse it (and its cached features)."""
    train_repeat = train_repeat or repeat
    name = f"fixtures-x{repeat}" + (f"-train{train_repeat}" if train_repeat != repeat else "") + \
        "".join(f"-{o.replace('/', '_')}" for o in only)
    folder = RESULTS / "data" / name
    if (folder / ".complete").exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for source in FIXTURES.rglob("*.jsonl"):
        relative = source.relative_to(FIXTURES)
        if only and not relative.as_posix().startswith(only):
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text += "\n"
        times = train_repeat if source.stem == "train" else repeat
        target.write_text(text * times if text.strip() else text, encoding="utf-8")
    (staging / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def fill_languages(data_dir: Path, task_name: str, splits=("validation", "test")) -> list[str]:
    """Give each language of the task with no files a copy of a fixture language's folder (round robin), where each
    language has a folder of its own; returns the languages that then have data."""
    from datamodules.slices import MissingData, fill, slices
    from datamodules.tasks import get_task, load_registry

    task = get_task(task_name, load_registry())

    def has_data(lang: str) -> bool:
        try:
            return all(slices(task, split, lang, data_dir) for split in splits if task.has_split(split))
        except MissingData:
            return False

    present = [lang for lang in task.languages if has_data(lang)]
    for index, lang in enumerate(lang for lang in task.languages if lang not in present):
        donor = present[index % len(present)]
        for source in task.sources:
            donor_config, config = fill(source.config, task, donor), fill(source.config, task, lang)
            donor_folder = data_dir / source.dataset / str(donor_config)
            if isinstance(config, str) and config != donor_config and donor_folder.is_dir():
                shutil.copytree(donor_folder, data_dir / source.dataset / config, dirs_exist_ok=True)
    return [lang for lang in task.languages if has_data(lang)]


def limit_threads(threads: int) -> None:
    """Use `threads` CPU threads in this process and its children (0: torch's default, one per core).

    On a machine whose cores other jobs share, torch's default is the worst choice for measuring: its OpenMP
    threads wait for each other at every operation, and one descheduled thread stalls them all (on 2 busy cores
    the same run took 1 s or 50 s). One thread per process degrades evenly, and every variant gets the same."""
    if threads > 0:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def add_threads_option(parser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process (default 0: torch's default, one per core); use 1 on a "
                             "machine shared with other jobs")


def machine() -> dict:
    """What the numbers were measured on."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": _cpu_name(), "memory_gib": round(memory / 2 ** 30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
        import lightning
        import transformers

        info.update(lightning=lightning.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------- child processes


def run_child(script: str, params: dict, timeout: float | None = None) -> dict:
    """Run `script --child PARAMS` in a fresh interpreter and return the result it printed."""
    command = [sys.executable, script, "--child", json.dumps(params)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{Path(script).name} child {params} failed (exit {done.returncode}):\n"
                       f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")


def main_or_child(main, child) -> None:
    """A script's entry point: `main()`, or in a child process (`--child JSON`) one measured run, `child(params)`,
    whose result goes back to the parent."""
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(RESULT_PREFIX + json.dumps(child(json.loads(sys.argv[2]))), flush=True)
    else:
        main()


class PeakMemory:
    """Peak memory while the block runs: resident set size sampled every 20 ms (CPU), or CUDA's peak allocation."""

    def __init__(self, cuda: bool = False):
        self.cuda, self.peak_rss, self.start_rss, self._stop = cuda, 0, 0, threading.Event()

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    def as_dict(self) -> dict:
        out = {"peak_rss_mib": self.peak_rss / MIB, "peak_rss_growth_mib": (self.peak_rss - self.start_rss) / MIB,
               "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if self.cuda:
            import torch

            out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MIB
        return out


# ---------------------------------------------------------------------- summaries


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], keys: list[str]) -> dict:
    """Per key: the median over repeats, and every repeat's value."""
    return {key: {"median": median([r.get(key) for r in runs]), "runs": [r.get(key) for r in runs]} for key in keys}


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, heading, format spec)."""
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), spec) for key, _, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and spec:
        return format(value, spec)
    return str(value)


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return path
