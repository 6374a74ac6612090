"""Few-step students on digits: FD-digits against NFE for the shipped flow teacher and UID students of 1, 2 and 4 steps
(dedicated) and one shared [1, 2, 4]-step student, at equal generator updates and at equal wall time.

    python benchmarks/few_step.py --iterations 1200 --out benchmarks/results/few_step_digits.json

Protocol: the teacher checkpoints/digits_teacher.ckpt at 1, 2, 4, 10 and 100 Euler steps; the students follow
convergence.DEFAULT_RECIPE (UID α = β = 1, K = 5, lr 3e-4 for both, Adam (0, 0.999), warm-up 50, cosine to 0.1×,
clip 1, EMA 0.99 / 0.995 with warm-up), seed 0, schedules evenly spaced from t = 0 (DMD2's): 2 steps [0, 0.5],
4 steps [0, 0.25, 0.5, 0.75], the shared student's 1 / 2 / 4 steps every 4th / 2nd / time of the latter. FD-digits of
the EMA 0.995 student (0.99 recorded too): 2000 samples from fixed noise (seed 1) with fixed re-noising (seed 2)
against the 1797 real digits; the floor is the FD of their interleaved halves. One CPU thread.

Equal updates: every student trains ``--iterations`` iterations (iterations / 6 generator updates). Equal wall time: a
second 1-step student trains as many iterations as fit into the 2-step student's training time (measured as the
process's CPU time at one thread, which other jobs on the machine do not inflate; scoring excluded; its cosine runs
over those iterations); the 4-step and shared students are read off their curves at that time (an interim point,
before their learning rate has decayed). Prints a table and one JSON line; writes the runs to
``--out`` and the plot to the same name with .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import convergence
import matplotlib
import torch

from realuid_lightning import EMA, DigitsDataModule, RealUIDModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets.features import DigitsFeatures
from realuid_lightning.sampling import sample_teacher

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

STUDENTS = {  # name: (generator_times, student_steps)
    "1-step": ([0.0], None),
    "2-step": ([0.0, 0.5], None),
    "4-step": ([0.0, 0.25, 0.5, 0.75], None),
    "shared": ([0.0, 0.25, 0.5, 0.75], [1, 2, 4]),
}
KEY = "ema_0.995_{}steps"
TEACHER_STEPS = (1, 2, 4, 10, 100)


class StepCurve(convergence.Curve):
    """FD of each EMA decay at each trained step count, on the fixed noise and fixed re-noising."""

    @torch.no_grad()
    def scores(self, module: RealUIDModule, ema: EMA) -> dict:
        point = {}
        for decay in ema.decays:
            with ema.swapped(module, decay):
                for m in module.generator.steps:
                    samples = module.generator(self.noise, None, m, torch.Generator().manual_seed(2))
                    point[f"ema_{decay}_{m}steps"] = round(self.score(samples), 3)
        return point


def distil(args: argparse.Namespace, teacher: tuple, score, noise, name: str, its: int) -> dict:
    """One student trained ``its`` iterations: its curve, final point and training seconds (scoring excluded)."""
    times, steps = STUDENTS[name]
    recipe = convergence.arguments(convergence.DEFAULT_RECIPE + ["--iterations", str(its)])
    curve = StepCurve(args.eval_every, score, noise)
    schedule = {"generator_times": times, "student_steps": steps}
    convergence.distil(*teacher, "uid", 0, recipe, [curve], generator=schedule)
    run = {"student": name, "iterations": its, "seconds": curve.points[-1]["cpu_seconds"], "final": curve.points[-1]}
    print(json.dumps(run), flush=True)
    return {**run, "curve": curve.points}


def at_time(run: dict, seconds: float) -> dict:
    """The last curve point of ``run`` at or before ``seconds`` of training (CPU time)."""
    return [p for p in run["curve"] if p["cpu_seconds"] <= seconds + 1e-6][-1]


def table(teacher: dict, runs: dict, budget: float, iterations: int) -> list[dict]:
    """Rows: model, NFE, FD at equal updates, FD at equal wall time (``budget`` s)."""
    rows = [
        {"model": f"teacher, {k} Euler steps", "nfe": k, "fd_updates": fd, "fd_time": fd} for k, fd in teacher.items()
    ]
    for name, (times, steps) in STUDENTS.items():
        run = runs[name]
        for m in steps or [len(times)]:
            timed = runs["1-step, equal time"]["final"] if name == "1-step" else at_time(run, budget)
            rows.append(
                {
                    "model": f"{name} student" if name != "shared" else "shared [1, 2, 4] student",
                    "nfe": m,
                    "fd_updates": run["final"][KEY.format(m)],
                    "fd_time": timed[KEY.format(m)],
                    "updates": iterations // 6,
                    "seconds": run["seconds"],
                }
            )
    return rows


def plot(rows: list[dict], floor: float, path: Path) -> None:
    """FD against NFE (log-log): the teacher, the dedicated and shared students at equal updates and equal time."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = {
        "teacher (Euler)": [r for r in rows if r["model"].startswith("teacher")],
        "dedicated students": [r for r in rows if r["model"][0].isdigit()],
        "shared [1, 2, 4] student": [r for r in rows if r["model"].startswith("shared")],
    }
    for (label, group), marker in zip(groups.items(), "osD"):
        ax.plot([r["nfe"] for r in group], [r["fd_updates"] for r in group], marker=marker, label=f"{label}")
    dedicated = groups["dedicated students"]
    ax.plot([r["nfe"] for r in dedicated], [r["fd_time"] for r in dedicated], "s--", label="dedicated, equal wall time")
    ax.axhline(floor, color="grey", ls=":", label="real-data floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations per sample)", ylabel="FD-digits (2000 samples)")
    ax.set_title("few-step students on 8×8 digits (EMA 0.995)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="checkpoints/digits_teacher.ckpt")
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=25, help="generator updates between curve points")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/few_step_digits.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    data = DigitsDataModule(source="sklearn", batch_size=64)
    data.setup("fit")
    real, features = data.real_images(), DigitsFeatures.pretrained()
    score = lambda samples: feature_frechet_distance(samples, real, features)
    net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
    noise = torch.randn(args.num_samples, *record.data_shape, generator=torch.Generator().manual_seed(1))
    floor = feature_frechet_distance(real[::2], real[1::2], features)
    teacher = {k: round(score(sample_teacher(net, process, noise, k)), 3) for k in TEACHER_STEPS}
    print("teacher:", teacher, "floor:", round(floor, 3), flush=True)
    runs = {name: distil(args, (net, process), score, noise, name, args.iterations) for name in STUDENTS}
    budget = runs["2-step"]["seconds"]
    its = round(args.iterations * budget / runs["1-step"]["seconds"] / 6) * 6
    runs["1-step, equal time"] = distil(args, (net, process), score, noise, "1-step", its)
    rows = table(teacher, runs, budget, args.iterations)
    fd = {(r["model"].split(" ")[0], r["nfe"]): r for r in rows}
    summary = {
        "benchmark": "few_step",
        "teacher": args.teacher,
        "iterations": args.iterations,
        "generator_updates": args.iterations // 6,
        "equal_time_seconds": budget,
        "one_step_equal_time_iterations": its,
        "num_samples": args.num_samples,
        "teacher_fd": teacher,
        "real_floor": round(floor, 3),
        "four_step_over_teacher100": fd[("4-step", 4)]["fd_updates"] / teacher[100],
        "two_step_beats_one_step_at_equal_time": fd[("2-step", 2)]["fd_time"] < fd[("1-step", 1)]["fd_time"],
        "shared_over_dedicated": {
            m: fd[("shared", m)]["fd_updates"] / fd[(f"{m}-step", m)]["fd_updates"] for m in (1, 2, 4)
        },
        "total_seconds": round(time.perf_counter() - start),
        "threads": torch.get_num_threads(),
    }
    print(f"| model | NFE | FD-digits, {args.iterations // 6} updates | FD-digits, {budget:.0f} s | training s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['nfe']} | {r['fd_updates']:.2f} | {r['fd_time']:.2f} | {r.get('seconds', '')} |")
    print(json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "runs": runs, **summary}, indent=1))
    plot(rows, floor, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()
