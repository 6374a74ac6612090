"""Plot FD against generator updates from the JSON files benchmarks/convergence.py writes (one line per run).

    python benchmarks/plot_curves.py RESULT.json [RESULT.json ...] --out benchmarks/results/convergence_digits.png

EMA curves are solid, raw ones dotted, on a log scale; dashed lines mark the teacher's 10- and 100-step FD.
A file may carry a label after a colon: ``results/probe_b.json:"cosine 0.1"``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="one-step students on 8×8 digits (FD-digits, 2000 samples)")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    teacher = None
    for i, item in enumerate(args.results):
        path, _, label = item.partition(":")
        result = json.loads(Path(path).read_text())
        teacher = result["teacher_fd"]
        decay = result["recipe"]["decays"][-1]
        for run in result["runs"]:
            name = f"{label or Path(path).stem} {run['setting']} s{run['seed']}"
            updates = [p["updates"] for p in run["curve"]]
            (line,) = ax.plot(updates, [p[f"ema_{decay}"] for p in run["curve"]], label=f"{name} EMA", lw=1.5)
            ax.plot(updates, [p["raw"] for p in run["curve"]], ":", color=line.get_color(), lw=1)
    if teacher is not None:
        for steps, style in (("10", "--"), ("100", "-.")):
            ax.axhline(
                teacher[steps], color="k", ls=style, lw=1, label=f"teacher, {steps} steps ({teacher[steps]:.2f})"
            )
    ax.set(yscale="log", xlabel="generator updates", ylabel="FD (log scale)", title=args.title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
