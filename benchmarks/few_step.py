"""Few-step students on digits: FD-digits against NFE for the shipped flow teacher and UID students of 1, 2 and 4 steps
(dedicated) and one shared [1, 2, 4]-step student, at equal generator updates and at equal wall time.

    python benchmarks/few_step.py --iterations 1200 --out benchmarks/results/few_step_digits.json
    python benchmarks/few_step.py --students 4-step --iterations 3600 --lr 1e-4 --seed 1 --out OUT.json

Protocol: the teacher checkpoints/digits_teacher.ckpt at 1, 2, 4, 10 and 100 Euler steps; the students follow
convergence.recipe (UID α = β = 1, K = ``--fake-updates`` (5), ``--lr`` for both, Adam (0, 0.999), warm-up 50,
cosine to 0.1×, clip 1, EMA ``--decays`` (0.99 / 0.995) with warm-up), training seed ``--seed``, schedules evenly
spaced from t_1 = ``--start`` (0: DMD2's) to 1: 2 steps [0, 0.5], 4 steps [0, 0.25, 0.5, 0.75] (t_1 = 0.4:
[0.4, 0.7], [0.4, 0.55, 0.7, 0.85]), the shared student's 1 / 2 / 4 steps every 4th / 2nd / time of the latter.
FD-digits of the EMA student at the last of ``--decays`` (the others recorded too): 2000 samples from fixed noise
(seed 1) with fixed re-noising (seed 2) against the 1797 real digits; the floor is the FD of their interleaved
halves. One CPU thread.

Equal updates: every student trains ``--iterations`` iterations (iterations / (K + 1) generator updates). Equal wall
time: a second 1-step student trains as many iterations as fit into the 2-step student's training time (measured as the
process's CPU time at one thread, which other jobs on the machine do not inflate; scoring excluded; its cosine runs
over those iterations); the 4-step and shared students are read off their curves at that time (an interim point,
before their learning rate has decayed); it needs both the 1- and the 2-step student among ``--students``. Prints a
table and one JSON line; writes the runs to ``--out`` and the plot to the same name with .png.

Diagnostics, recorded in each curve point: ``--per-step``, the FD of the data estimate after each step of the most-step
schedule and of their mixture; ``--real-reads``, the FD of one read at each time of the 4-step schedule from re-noised
real digits (:func:`real_reads`; the teacher's too). Variants: ``--fake-per-step`` (one fake model per step path),
``--fake-init teacher``, ``--fake-per-count scratch scratch teacher`` (the shared student's fake model is one per
step count, each with its start), ``--step-weights 1 2 4`` (the shared student draws its 1 / 2 / 4 steps ∝ these
weights), ``--two-step-times 0.4 0.9`` (the dedicated 2-step student's schedule, e.g. its second read late).
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

from realuid_lightning import EMA, DigitsDataModule, FewStepGenerator, RealUIDModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets.features import DigitsFeatures
from realuid_lightning.sampling import sample_teacher

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

STUDENTS = {"1-step": (1, None), "2-step": (2, None), "4-step": (4, None), "shared": (4, [1, 2, 4])}  # (N, steps)
TEACHER_STEPS = (1, 2, 4, 10, 100)


class StepCurve(convergence.Curve):
    """FD of each EMA decay at each trained step count, on the fixed noise and fixed re-noising; ``per_step``: also,
    at the most steps M, the FD of the data estimate after each step 1 … M (``…_each``) and of their mixture (M
    equal parts, ``…_mixture``: what one fake model is fitted to when the step k is drawn uniformly)."""

    def __init__(self, every: int, score, noise: torch.Tensor, per_step: bool = False, probe=None) -> None:
        super().__init__(every, score, noise)
        self.per_step, self.probe = per_step, probe

    @torch.no_grad()
    def scores(self, module: RealUIDModule, ema: EMA) -> dict:
        point, most = {}, max(module.generator.steps)
        for decay in ema.decays:
            with ema.swapped(module, decay):
                for m in module.generator.steps:
                    reads = module.generator.estimates(self.noise, None, m, torch.Generator().manual_seed(2))
                    point[key(decay, m)] = round(self.score(reads[-1]), 3)
                    if self.per_step and m == most > 1:
                        point[f"{key(decay, m)}_each"] = [round(self.score(r), 3) for r in reads]
                        mixture = torch.cat([r[k::m] for k, r in enumerate(reads)])
                        point[f"{key(decay, m)}_mixture"] = round(self.score(mixture), 3)
                if self.probe is not None:
                    point[f"ema_{decay}_real_reads"] = self.probe(module.generator)
        return point


def real_reads(real: torch.Tensor, features: DigitsFeatures, times: list[float]):
    """FD-digits of one read x̂1 = G_θ(x_t, t) at each of ``times`` from the even half of the real digits re-noised to
    t (fixed noise, seed 5) against the odd half (the halves' own FD is the floor): how well the network finishes a
    sample from a perfect input. A function of the generator, giving {time: FD}."""
    even, odd = real[::2], real[1::2]
    z = torch.randn(even.shape, generator=torch.Generator().manual_seed(5))

    @torch.no_grad()
    def fds(generator: FewStepGenerator) -> dict[str, float]:
        ts = {time_: torch.full((even.shape[0],), time_) for time_ in times}
        reads = {time_: generator.read(generator.renoise(even, t, z), t) for time_, t in ts.items()}
        return {str(time_): round(feature_frechet_distance(x1, odd, features), 3) for time_, x1 in reads.items()}

    return fds


def distil(args: argparse.Namespace, teacher: tuple, score, noise, name: str, its: int, probe=None) -> dict:
    """One student trained ``its`` iterations: its curve, final point and training seconds (scoring excluded);
    ``probe``: :func:`real_reads` at each curve point."""
    n, steps = STUDENTS[name]
    curve = StepCurve(args.eval_every, score, noise, args.per_step, probe)
    schedule = {"generator_times": schedule_times(args, n), "student_steps": steps}
    schedule |= {"fake_per_step": args.fake_per_step, "student_step_weights": args.step_weights if steps else None}
    if steps and args.fake_per_count:
        schedule |= {"fake_per_count": True, "fake_init": args.fake_per_count}
    recipe = convergence.student_recipe(args, its)
    convergence.distil(*teacher, "uid", args.seed, recipe, [curve], generator=schedule)
    run = {"student": name, "iterations": its, "seconds": curve.points[-1]["cpu_seconds"], "final": curve.points[-1]}
    print(json.dumps(run), flush=True)
    return {**run, "curve": curve.points}


def schedule_times(args: argparse.Namespace, n: int) -> list[float]:
    """The times of an ``n``-step student: ``--two-step-times`` for 2 steps where given, else evenly spaced."""
    return args.two_step_times if n == 2 and args.two_step_times else evenly_spaced(args.start, n)


def evenly_spaced(start: float, n: int) -> list[float]:
    """t_k = t_1 + (k − 1)(1 − t_1)/N, k = 1 … N: [0, 0.25, 0.5, 0.75] for t_1 = 0, N = 4."""
    return [round(start + k * (1 - start) / n, 6) for k in range(n)]


def at_time(run: dict, seconds: float) -> dict:
    """The last curve point of ``run`` at or before ``seconds`` of training (CPU time)."""
    return [p for p in run["curve"] if p["cpu_seconds"] <= seconds + 1e-6][-1]


def timed_point(runs: dict, name: str, budget: float | None) -> dict:
    """Student ``name`` at ``budget`` seconds: the equal-time 1-step run's end (its iterations fill the budget up to
    rounding), the others' curves read at the budget; {} without a budget."""
    if budget is None:
        return {}
    return runs["1-step, equal time"]["final"] if name == "1-step" else at_time(runs[name], budget)


def key(decay: float, steps: int) -> str:
    """The curve entry of the EMA student at ``decay`` sampled in ``steps`` steps."""
    return f"ema_{decay}_{steps}steps"


def table(teacher: dict, runs: dict, budget: float | None, updates: int, decay: float) -> list[dict]:
    """Rows: model, NFE, FD (EMA ``decay``) at equal updates, FD at equal wall time (``budget`` s: the 2-step
    student's; None where the 1- and 2-step students did not both train)."""
    rows = [
        {"model": f"teacher, {k} Euler steps", "nfe": k, "fd_updates": fd, "fd_time": fd} for k, fd in teacher.items()
    ]
    for name, (n, steps) in STUDENTS.items():
        if name not in runs:
            continue
        run = runs[name]
        timed = timed_point(runs, name, budget)
        for m in steps or [n]:
            rows.append(
                {
                    "model": f"{name} student" if name != "shared" else "shared [1, 2, 4] student",
                    "nfe": m,
                    "fd_updates": run["final"][key(decay, m)],
                    "fd_time": timed.get(key(decay, m)),
                    "updates": updates,
                    "seconds": run["seconds"],
                }
            )
    return rows


def plot(rows: list[dict], floor: float, path: Path, decay: float) -> None:
    """FD against NFE (log-log): the teacher, the dedicated and shared students at equal updates and equal time."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = {
        "teacher (Euler)": [r for r in rows if r["model"].startswith("teacher")],
        "dedicated students": [r for r in rows if r["model"][0].isdigit()],
        "shared [1, 2, 4] student": [r for r in rows if r["model"].startswith("shared")],
    }
    for (label, group), marker in zip(groups.items(), "osD"):
        ax.plot([r["nfe"] for r in group], [r["fd_updates"] for r in group], marker=marker, label=f"{label}")
    dedicated = [r for r in groups["dedicated students"] if r["fd_time"] is not None]
    ax.plot([r["nfe"] for r in dedicated], [r["fd_time"] for r in dedicated], "s--", label="dedicated, equal wall time")
    ax.axhline(floor, color="grey", ls=":", label="real-data floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE (network evaluations per sample)", ylabel="FD-digits (2000 samples)")
    ax.set_title(f"few-step students on 8×8 digits (EMA {decay})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="checkpoints/digits_teacher.ckpt")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    convergence.add_student_arguments(parser)
    parser.add_argument("--start", type=float, default=0.0, help="t_1, the schedules' first time (one-step t_G)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the noise and re-noising stay fixed)")
    parser.add_argument("--eval-every", type=int, default=25, help="generator updates between curve points")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument(
        "--fake-per-step", action="store_true", help="one fake model per step path (GeneratorOptions.fake_per_step)"
    )
    parser.add_argument(
        "--fake-per-count",
        nargs=3,
        choices=["scratch", "teacher"],
        help="the shared student's fake model is one per step count 1 / 2 / 4, starting as these "
        "(GeneratorOptions.fake_per_count, e.g. scratch scratch teacher; --fake-init stays the dedicated students')",
    )
    parser.add_argument(
        "--real-reads",
        action="store_true",
        help="also score one read at each time of the 4-step schedule from re-noised real digits (real_reads)",
    )
    parser.add_argument(
        "--per-step", action="store_true", help="also score the estimate after each step and their mixture"
    )
    parser.add_argument(
        "--step-weights",
        nargs=3,
        type=float,
        help="the shared student's weights of 1 / 2 / 4 steps (GeneratorOptions.student_step_weights; default equal)",
    )
    parser.add_argument(
        "--two-step-times",
        nargs=2,
        type=float,
        help="the dedicated 2-step student's schedule t_1 t_2 (default evenly spaced; t_1 must be --start)",
    )
    parser.add_argument("--out", default="benchmarks/results/few_step_digits.json")
    args = parser.parse_args()
    if args.two_step_times and args.two_step_times[0] != args.start:
        raise SystemExit(f"--two-step-times {args.two_step_times} must start at --start {args.start}, the 1-step t_G")
    if args.fake_per_step and args.fake_per_count:
        raise SystemExit(
            "--fake-per-step and --fake-per-count are both given; choose one fake model per step path or per count"
        )
    return args


def summarise(args: argparse.Namespace, teacher: dict, floor: float, runs: dict, budget: float | None) -> dict:
    """The issue's figures that the trained students allow: 4-step over the 100-step teacher and the floor, 2-step
    against 1-step at equal time, shared over dedicated at each step count."""
    rows = table(teacher, runs, budget, convergence.generator_updates(args), args.decays[-1])
    fd = {(r["model"].split(" ")[0], r["nfe"]): r for r in rows}
    summary = {
        "benchmark": "few_step",
        **{k: getattr(args, k) for k in ("teacher", "students", "start", "iterations", "lr", "fake_updates", "seed")},
        "fake_per_step": args.fake_per_step,
        "fake_per_count": args.fake_per_count,
        "fake_init": args.fake_init,
        "precision": args.precision,
        "step_weights": args.step_weights,
        "two_step_times": schedule_times(args, 2),
        "ema": args.decays[-1],
        "num_samples": args.num_samples,
        "generator_updates": convergence.generator_updates(args),
        "equal_time_seconds": budget,
        "one_step_equal_time_iterations": runs.get("1-step, equal time", {}).get("iterations"),
        "teacher_fd": teacher,
        "real_floor": round(floor, 3),
        "shared_over_dedicated": {
            m: fd[("shared", m)]["fd_updates"] / fd[(f"{m}-step", m)]["fd_updates"]
            for m in (1, 2, 4)
            if ("shared", m) in fd and (f"{m}-step", m) in fd
        },
    }
    if ("4-step", 4) in fd:
        summary["four_step_over_teacher100"] = fd[("4-step", 4)]["fd_updates"] / teacher[100]
        summary["four_step_over_floor"] = fd[("4-step", 4)]["fd_updates"] / floor
    if budget is not None:
        summary["two_step_beats_one_step_at_equal_time"] = fd[("2-step", 2)]["fd_time"] < fd[("1-step", 1)]["fd_time"]
    return {"rows": rows, **summary}


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    real, features = DigitsDataModule(source="sklearn").real_images(), DigitsFeatures.pretrained()
    score = lambda samples: feature_frechet_distance(samples, real, features)
    net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
    noise = torch.randn(args.num_samples, *record.data_shape, generator=torch.Generator().manual_seed(1))
    floor = feature_frechet_distance(real[::2], real[1::2], features)
    teacher = {k: round(score(sample_teacher(net, process, noise, k)), 3) for k in TEACHER_STEPS}
    probe = real_reads(real, features, evenly_spaced(args.start, 4)) if args.real_reads else None
    teacher_reads = probe(FewStepGenerator(net, process, [[args.start]])) if probe else None
    print("teacher:", teacher, "floor:", round(floor, 3), "reads of re-noised real digits:", teacher_reads, flush=True)
    runs = {name: distil(args, (net, process), score, noise, name, args.iterations, probe) for name in args.students}
    budget = runs["2-step"]["seconds"] if {"1-step", "2-step"} <= runs.keys() else None
    if budget is not None:
        cycle = args.fake_updates + 1
        its = round(args.iterations * budget / runs["1-step"]["seconds"] / cycle) * cycle
        runs["1-step, equal time"] = distil(args, (net, process), score, noise, "1-step", its)
    result = summarise(args, teacher, floor, runs, budget)
    result |= {"teacher_real_reads": teacher_reads} if probe else {}
    result |= {"total_seconds": round(time.perf_counter() - start), "threads": torch.get_num_threads()}
    timed = "equal time: not run" if budget is None else f"{budget:.0f} s"
    print(f"| model | NFE | FD-digits, {result['generator_updates']} updates | FD-digits, {timed} | training s |")
    print("|---|---|---|---|---|")
    for r in result["rows"]:
        timed = "—" if r["fd_time"] is None else f"{r['fd_time']:.2f}"
        print(f"| {r['model']} | {r['nfe']} | {r['fd_updates']:.2f} | {timed} | {r.get('seconds', '')} |")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**result, "runs": runs}, indent=1))
    plot(result["rows"], floor, Path(args.out).with_suffix(".png"), args.decays[-1])


if __name__ == "__main__":
    main()
