"""Start-up time of the command line: `xstilts --help` and `xstilts tasks`, each a fresh process, wall time from
spawn to exit (interpreter start and imports included), interleaved, median of --repeats.

    python benchmarks/startup.py --repeats 20

Target: `xstilts --help` within 0.5 s. Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

COMMANDS = {"xstilts --help": ["--help"], "xstilts tasks": ["tasks"], "xstilts fit --help": ["fit", "--help"]}
TARGETS = {"xstilts --help": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    executable = Path(sys.executable).with_name("xstilts")
    base = [str(executable)] if executable.exists() else [sys.executable, "-m", "sweeps.cli"]
    for argv in COMMANDS.values():  # once untimed: byte-code caches
        subprocess.run(base + argv, capture_output=True, check=True)
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(base + argv, capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    rows = [{"command": name, "median_s": _common.median(t), "min_s": min(t), "max_s": max(t),
             "target_s": TARGETS.get(name), "met": None if name not in TARGETS else _common.median(t) <= TARGETS[name]}
            for name, t in times.items()]
    print(f"wall time per command, fresh process each; medians of {args.repeats}")
    _common.print_table(rows, [("command", "command", ""), ("median_s", "median s", ".3f"), ("min_s", "min s", ".3f"),
                               ("max_s", "max s", ".3f"), ("target_s", "target s", ".1f"), ("met", "met", "")])
    _common.write_results("startup", {"settings": vars(args), "table": rows, "runs": times})


if __name__ == "__main__":
    main()
