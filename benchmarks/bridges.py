"""Bridges benchmark: one-step image-to-image distillation of a Brownian-bridge teacher on digits (4× SR, inpainting).

    python benchmarks/bridges.py [--teacher-steps 1500] [--iterations 900]
    python benchmarks/bridges.py --tasks "4× super-resolution" --generator-times 0.1 0.55 \
        --out benchmarks/results/bridges_sr_2step.json                    # 2-step students (README 'Few-step students')
    python benchmarks/bridges.py --tasks "4× super-resolution" --generator-times 0.1 0.55 --students uid \
        --fake-updates 2 --iterations 2700 --lr 1e-4 --seed 1 --out OUT.json   # another recipe and training seed

For each task a bridge teacher f*(t, x_t, x0) is trained on pairs [x1, x0] of the 1 797 8×8 digits and
their degraded copies (4× average-pool downsampling upsampled back, i.e. 2×2 → 8×8; or a random 4×4 box
set to 0), then distilled into one-step generators G(z, x0) by UID (α = β = 1, the data-free IBMD-style
baseline) and RealUID (α = 0.94, β/α = 1.02, real pairs in the fake model's loss), with the same
iterations. Scores on all 1 797 sources (seed-0 degradations of the training images; the real set
is the training set, as in benchmarks/digits.py): PSNR of the output to the clean image (dB, range
[−1, 1]) and FD-digits of the outputs against the 1 797 real digits. The teacher samples with
Euler–Maruyama on the bridge SDE (1 step = the posterior mean E[x1 | x0]). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor

from realuid_lightning import (
    EMA,
    BrownianBridge,
    DigitsDataModule,
    GeneratorOptions,
    MatchingModule,
    Objective,
    OptimisationOptions,
    PairedDataModule,
    RealUIDModule,
    TeacherOptions,
)
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets import DigitsFeatures, UNet
from realuid_lightning.sampling import sample_teacher

TASKS = {
    "4× super-resolution": {"degradation": "downsample", "factor": 4},
    "inpainting (4×4 box)": {"degradation": "box", "box_size": 4},
}
STUDENTS = {"uid": ("UID (α=β=1)", 1.0, 1.0), "realuid": ("RealUID (α=0.94, β/α=1.02)", 0.94, 0.9588)}
STUDENT_EMA = 0.95  # over ~150 generator updates
QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    limit_val_batches=0,
)


def psnr(x: Tensor, y: Tensor) -> float:
    """Mean over images of 10·log10(2² / MSE) for images in [−1, 1] (outputs clamped)."""
    mse = (x.clamp(-1, 1) - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


def train_teacher(data: PairedDataModule, steps: int, sigma: float, prediction: str) -> MatchingModule:
    """A small bridge teacher: UNet(32, 64) with the source as a second input channel; returns its EMA-0.995 weights."""
    pl.seed_everything(0)
    net = UNet(
        8,
        1,
        (32, 64),
        layers_per_block=1,
        attention_levels=(),
        attention_head_dim=8,
        norm_num_groups=8,
        source_channels=1,
    )
    teacher = MatchingModule(
        net, BrownianBridge(sigma=sigma, prediction=prediction), lr=5e-4, warmup_steps=100, sample_method="sde"
    )
    ema = EMA([0.995])
    pl.Trainer(max_steps=steps, gradient_clip_val=1.0, callbacks=[ema], **QUIET).fit(teacher, data)
    teacher.net.load_state_dict(ema.averages["0.995"])
    return teacher.eval()


def distil(
    teacher: MatchingModule, data: PairedDataModule, alpha: float, beta: float, args: argparse.Namespace
) -> tuple[RealUIDModule, EMA, float]:
    """A student (α, β) of ``teacher`` by the command line's recipe: (module, its EMA, seconds)."""
    pl.seed_everything(args.seed)
    lr = args.lr
    student = RealUIDModule(
        TeacherOptions(net=teacher.net, process=teacher.process),
        Objective(alpha, beta),
        OptimisationOptions(fake_updates=args.fake_updates, generator_lr=lr, fake_lr=lr, warmup_steps=50),
        GeneratorOptions(
            generator_time=args.generator_time,
            generator_times=args.generator_times,
            fake_per_step=args.fake_per_step,
            fake_init=args.fake_init,
        ),
    )
    ema = EMA([STUDENT_EMA])
    start = time.perf_counter()
    pl.Trainer(max_steps=args.iterations, callbacks=[ema], **QUIET).fit(student, data)
    return student, ema, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--iterations", type=int, default=900, help="distillation iterations")
    parser.add_argument("--fake-updates", type=int, default=5, help="K, fake-model updates per generator update")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--seed", type=int, default=0, help="the students' training seed (the teacher's stays 0)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--prediction", default="drift", choices=("drift", "x1", "velocity"))
    parser.add_argument("--generator-time", type=float, default=0.1)
    parser.add_argument(
        "--generator-times", type=float, nargs="+", default=None, help="a few-step schedule instead (e.g. 0.1 0.55)"
    )
    parser.add_argument(
        "--fake-per-step", action="store_true", help="one fake model per step path (GeneratorOptions.fake_per_step)"
    )
    parser.add_argument("--fake-init", default="scratch", choices=["scratch", "teacher"], help="how f starts")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out", default="benchmarks/results/bridges.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start, features, rows = time.perf_counter(), DigitsFeatures.pretrained(), []
    for task in args.tasks:
        data = PairedDataModule(DigitsDataModule(batch_size=args.batch_size), **TASKS[task])
        x1, x0 = data.pairs()
        noise = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
        score = lambda out: {"psnr": psnr(out, x1), "fd": feature_frechet_distance(out, x1, features)}
        rows.append({"task": task, "model": "source x0 (degraded input)", "nfe": "-", **score(x0)})
        t0 = time.perf_counter()
        teacher = train_teacher(data, args.teacher_steps, args.sigma, args.prediction)
        rows.append(
            {
                "task": task,
                "model": "teacher training",
                "nfe": "-",
                "psnr": None,
                "fd": None,
                "seconds": time.perf_counter() - t0,
            }
        )
        for steps in (1, 4, 20):
            out = sample_teacher(
                teacher.net.eval(),
                teacher.process,
                noise,
                steps,
                "sde",
                cond=x0,
                generator=torch.Generator().manual_seed(2),
            )
            rows.append({"task": task, "model": f"teacher, {steps} SDE steps", "nfe": steps, **score(out)})
        for name, alpha, beta in (STUDENTS[key] for key in args.students):
            student, ema, seconds = distil(teacher, data, alpha, beta, args)
            nfe = len(args.generator_times or [args.generator_time])
            draw = lambda: student.generator(noise, x0, None, torch.Generator().manual_seed(2))  # noqa: E731
            with torch.no_grad():
                rows.append(
                    {
                        "task": task,
                        "model": f"{name}, raw",
                        "nfe": nfe,
                        **score(draw()),
                        "seconds": seconds,
                    }
                )
                with ema.swapped(student, STUDENT_EMA):
                    rows.append(
                        {
                            "task": task,
                            "model": f"{name}, EMA {STUDENT_EMA}",
                            "nfe": nfe,
                            **score(draw()),
                        }
                    )
    summary = {
        "benchmark": "bridges",
        "teacher_steps": args.teacher_steps,
        "iterations": args.iterations,
        "fake_updates": args.fake_updates,
        "generator_updates": args.iterations // (args.fake_updates + 1),
        "lr": args.lr,
        "seed": args.seed,
        "prediction": args.prediction,
        "sigma": args.sigma,
        "generator_time": args.generator_time,
        "generator_times": args.generator_times,
        "fake_per_step": args.fake_per_step,
        "fake_init": args.fake_init,
        "total_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    for task in args.tasks:
        fd = {r["model"]: r["fd"] for r in rows if r["task"] == task and r["fd"] is not None}
        students = {k: v for k, v in fd.items() if k.startswith(("UID", "RealUID"))}
        best = min(students, key=students.get)
        summary[task] = {
            "fd": fd,
            "psnr": {r["model"]: r["psnr"] for r in rows if r["task"] == task and r["psnr"] is not None},
            "best_one_step": best,
            "best_over_teacher20": students[best] / fd["teacher, 20 SDE steps"],
        }
    print("| task | model | NFE | PSNR (dB) ↑ | FD-digits ↓ | wall time (s) |\n|---|---|---|---|---|---|")
    for r in rows:
        cells = ["" if r[k] is None else f"{r[k]:.2f}" for k in ("psnr", "fd")]
        print(
            f"| {r['task']} | {r['model']} | {r['nfe']} | {cells[0]} | {cells[1]} | "
            f"{round(r['seconds']) if 'seconds' in r else ''} |"
        )
    print(json.dumps(summary, ensure_ascii=False))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, **summary}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
