"""Start-up benchmark: the CPU time (user + sys) of ``realuid --help``, ``realuid sample --help`` and
``realuid evaluate --help`` against ``python -c "import torch, lightning"``, measured side by side.

    python benchmarks/startup.py [--repeats 3]

Each repeat runs every command once, in turn, as a child process; its CPU time is the change of
``resource.getrusage(RUSAGE_CHILDREN)`` across the run. Prints a table (median over repeats, and the ratio of
each median to the baseline's) and one JSON line. Issue 12's target: ``realuid --help`` within 1.5× the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REALUID = str(Path(sys.executable).with_name("realuid"))
COMMANDS = {
    "import torch, lightning": [sys.executable, "-c", "import torch, lightning"],
    "realuid --help": [REALUID, "--help"],
    "realuid sample --help": [REALUID, "sample", "--help"],
    "realuid evaluate --help": [REALUID, "evaluate", "--help"],
}


def cpu_and_wall(command: list[str]) -> tuple[float, float]:
    """(user + sys CPU seconds, wall seconds) of one run of ``command`` as a child process."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            runs[name].append(cpu_and_wall(command))
    cpu = {name: statistics.median(c for c, _ in values) for name, values in runs.items()}
    wall = {name: statistics.median(w for _, w in values) for name, values in runs.items()}
    base = cpu["import torch, lightning"]
    print(f"| command | CPU s (median of {args.repeats}) | CPU s (all) | wall s | × baseline CPU |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        print(
            f"| `{name}` | {cpu[name]:.2f} | {', '.join(f'{c:.2f}' for c, _ in values)} | {wall[name]:.2f} | "
            f"{cpu[name] / base:.2f} |"
        )
    print(
        json.dumps(
            {
                "repeats": args.repeats,
                "cpu_s": cpu,
                "wall_s": wall,
                "ratio_to_baseline": {name: round(cpu[name] / base, 3) for name in cpu},
            }
        )
    )


if __name__ == "__main__":
    main()
