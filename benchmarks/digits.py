"""Digits benchmark: FD-digits of the shipped flow teacher at 1, 4, 10, 100 steps vs one-step UID and RealUID students.

    python benchmarks/digits.py [--iterations 1800] [--teacher checkpoints/digits_teacher.ckpt]
    python benchmarks/digits.py --teacher checkpoints/digits_vp_teacher.ckpt --generator-sigma 2.5 \
        --settings realuid1.02 --out benchmarks/results/digits_vp.json          # the diffusion (VP, ε-prediction) row
    python benchmarks/digits.py --settings realuid0.98 --ema-warmup --out benchmarks/results/digits_ema_warmup.json

FD-digits is the Fréchet distance between 64-d features of a small digit classifier
(realuid_lightning.nets.DigitsFeatures, trained by scripts/train_digits_features.py) of 5000 generated
images and the 1797 real 8×8 digits. All students get the same number of iterations (K = 5 fake updates
per generator update). Prints a table, the FD curves of the EMA generators, and one JSON line.
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
from convergence import fit_quietly

from realuid_lightning import (
    EMA,
    DigitsDataModule,
    GeneratorOptions,
    Objective,
    OptimisationOptions,
    RealUIDModule,
    TeacherOptions,
)
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets import DigitsFeatures
from realuid_lightning.sampling import sample_teacher

SETTINGS = {
    "uid": ("UID (α=β=1)", 1.0, 1.0),
    "realuid0.98": ("RealUID β/α=0.98 (α=0.94)", 0.94, 0.9212),
    "realuid1.02": ("RealUID β/α=1.02 (α=0.94)", 0.94, 0.9588),
}
DECAYS = (0.99, 0.995)


class Curve(pl.Callback):
    """FD-digits of the EMA-0.99 generator (2000 samples) every ``every`` iterations."""

    def __init__(self, every: int, score, ema: EMA) -> None:
        self.every, self.score, self.ema, self.points = every, score, ema, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            with self.ema.swapped(pl_module, DECAYS[0]):
                self.points.append(
                    (
                        trainer.global_step,
                        round(self.score(pl_module.sample(2000, torch.Generator().manual_seed(2))), 2),
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="checkpoints/digits_teacher.ckpt")
    parser.add_argument("--iterations", type=int, default=1800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--generator-sigma",
        type=float,
        default=None,
        help="for a diffusion teacher: the generator's noise level (SiD's sigma_init = 2.5)",
    )
    parser.add_argument("--ema-warmup", action="store_true", help="EMA(warmup=True): d_n = min(d, (1 + n)/(10 + n))")
    parser.add_argument("--out", default="benchmarks/results/digits.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    data = DigitsDataModule(batch_size=args.batch_size)
    real, features = data.real_images(), DigitsFeatures.pretrained()
    score = lambda samples: feature_frechet_distance(samples, real, features)
    net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
    noise = torch.randn(5000, *record.data_shape, generator=torch.Generator().manual_seed(1))

    rows = [
        {
            "model": "real digits, half vs half",
            "steps": "-",
            "fd": feature_frechet_distance(real[::2], real[1::2], features),
        }
    ]
    for steps in (1, 4, 10, 100):
        rows.append(
            {
                "model": f"teacher, {steps} Euler steps",
                "steps": steps,
                "fd": score(sample_teacher(net, process, noise, steps)),
            }
        )
        print(rows[-1], flush=True)
    curves = {}
    for name, alpha, beta in (SETTINGS[key] for key in args.settings):
        pl.seed_everything(0)
        student = RealUIDModule(
            TeacherOptions(net=net, process=process),
            Objective(alpha, beta),
            OptimisationOptions(generator_lr=args.lr, fake_lr=args.lr, warmup_steps=50),
            GeneratorOptions(generator_sigma=args.generator_sigma),
        )
        ema = EMA(DECAYS, warmup=args.ema_warmup)
        curve = Curve(max(args.iterations // 6, 1), score, ema)
        t0 = time.perf_counter()
        fit_quietly(student, data, args.iterations, [ema, curve])
        seconds = time.perf_counter() - t0
        rows.append({"model": f"{name}, raw", "steps": 1, "fd": score(student.generator(noise)), "seconds": seconds})
        for decay in DECAYS:
            with ema.swapped(student, decay), torch.no_grad():
                rows.append({"model": f"{name}, EMA {decay}", "steps": 1, "fd": score(student.generator(noise))})
        curves[name] = curve.points
        print(rows[-3:], curve.points, flush=True)

    teacher100 = next(r["fd"] for r in rows if r["steps"] == 100)
    students = {r["model"]: r["fd"] for r in rows if r["steps"] == 1 and "teacher" not in r["model"]}
    best = min(students, key=students.get)
    summary = {
        "benchmark": "digits",
        "teacher": args.teacher,
        "process": type(process).__name__,
        "iterations": args.iterations,
        "generator_updates": args.iterations // 6,
        "ema_warmup": args.ema_warmup,
        "teacher_fd": {str(r["steps"]): r["fd"] for r in rows if "teacher" in r["model"]},
        "students_fd": students,
        "best_student": best,
        "best_student_over_teacher100": students[best] / teacher100,
        "curves_ema0.99": curves,
        "total_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    print("| model | NFE | FD-digits ↓ | wall time (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['steps']} | {r['fd']:.2f} | {'' if 'seconds' not in r else round(r['seconds'])} |")
    print(
        f"\nbest one-step: {best} ({students[best]:.2f}) = "
        f"{summary['best_student_over_teacher100']:.2f}× the teacher's 100-step FD"
    )
    for name, points in curves.items():
        print(f"curve {name} (iteration, FD of EMA {DECAYS[0]}): {points}")
    print(json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, **summary}, indent=1))


if __name__ == "__main__":
    main()
