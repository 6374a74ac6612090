"""Toy 2-D benchmark: teacher vs one-step UID / RealUID generators on 8 Gaussians, on one CPU thread.

    python benchmarks/toy2d.py [--iterations 6000] [--out benchmarks/results/toy2d.json]

Prints a table and one JSON line: energy distance (10k samples vs 10k held-out points) of the teacher at
1, 4 and 100 Euler steps and of each one-step generator, wall times, and the cost of a RealUIDModule
iteration in Lightning relative to a plain PyTorch loop running the same computation.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from convergence import fit_quietly

from realuid_lightning import (
    EMA,
    MLP,
    FlowMatching,
    MatchingModule,
    Objective,
    OptimisationOptions,
    RealUIDModule,
    TeacherOptions,
    Toy2DDataModule,
)
from realuid_lightning.data import sample_toy
from realuid_lightning.losses import realuid_generator_loss, realum_loss
from realuid_lightning.metrics import energy_distance

SETTINGS = [
    ("UID (α=β=1)", 1.0, 1.0),
    ("RealUID β/α=1.02 (α=0.94)", 0.94, 0.9588),
    ("RealUID β/α=0.98 (α=0.94)", 0.94, 0.9212),
]
STUDENT_EMA = 0.99


def fit(module: pl.LightningModule, steps: int, callbacks: list) -> float:
    start = time.perf_counter()
    fit_quietly(module, Toy2DDataModule("8gaussians", batch_size=512), steps, callbacks)
    return time.perf_counter() - start


class IterationTimer(pl.Callback):
    """Wall time per iteration over the iterations after a warm-up of ``skip``."""

    def __init__(self, skip: int = 200) -> None:
        self.skip, self.start, self.count = skip, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.per_iteration = (time.perf_counter() - self.start) / (trainer.global_step - self.skip)


def plain_loop_per_iteration(module: RealUIDModule, iterations: int, skip: int = 200) -> float:
    """The same K:1 RealUID computation as RealUIDModule, as a hand-written PyTorch loop
    (the official recipe's shape)."""
    hp, process = module.optimisation, module.process
    alpha, beta = module.objective.alpha, module.objective.beta
    gen, fake, teacher = module.generator, module.fake_model, module.teacher.net
    opt_f = torch.optim.Adam(fake.parameters(), lr=hp.fake_lr, betas=tuple(hp.adam_betas))
    opt_g = torch.optim.Adam(gen.parameters(), lr=hp.generator_lr, betas=tuple(hp.adam_betas))
    data = sample_toy("8gaussians", 100_000, 0)
    start = None
    for i in range(iterations):
        if i == skip:
            start = time.perf_counter()
        x1_real = data[torch.randint(0, data.shape[0], (512,))]
        generator_turn = i % (hp.fake_updates + 1) == hp.fake_updates
        x0, t = torch.randn_like(x1_real), torch.rand(512)
        if generator_turn:
            s = process.sample(x0, gen(torch.randn_like(x1_real)), t)
            loss = realuid_generator_loss(teacher(t, s.x_t), fake(t, s.x_t), s.target, s.weight, alpha, beta).mean()
            opt, params = opt_g, list(gen.parameters())
        else:
            with torch.no_grad():
                x1_gen = gen(torch.randn_like(x1_real))
            g, r = process.sample(x0, x1_gen, t), process.sample(x0, x1_real, t)
            f_g, f_r = fake(torch.cat([t, t]), torch.cat([g.x_t, r.x_t])).chunk(2)
            loss = realum_loss(f_g, g.target, g.weight, alpha, beta, f_r, r.target, r.weight).mean()
            opt, params = opt_f, list(fake.parameters())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in fake.parameters() if generator_turn else []:
            p.grad = None  # the fake model's stray gradients from the generator loss
        torch.nn.utils.clip_grad_norm_(params, hp.grad_clip)
        opt.step()
    return (time.perf_counter() - start) / (iterations - skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=3000)
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", default="benchmarks/results/toy2d.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    held_out = sample_toy("8gaussians", 10_000, seed=12345)
    noise = torch.Generator().manual_seed(1)
    score = lambda samples: energy_distance(samples, held_out)
    total_start = time.perf_counter()

    pl.seed_everything(0)
    teacher, teacher_ema = MatchingModule(MLP(2, 256, 4), FlowMatching(), lr=1e-3, warmup_steps=100), EMA([0.999])
    rows = [
        {
            "model": "teacher (training)",
            "steps": "-",
            "energy_distance": None,
            "seconds": fit(teacher, args.teacher_steps, [teacher_ema]),
        }
    ]
    teacher.net.load_state_dict(teacher_ema.averages["0.999"])
    for steps in (1, 4, 100):
        rows.append(
            {
                "model": f"teacher, {steps} Euler steps",
                "steps": steps,
                "energy_distance": score(teacher.sample(10_000, noise.manual_seed(1), steps=steps)),
                "seconds": None,
            }
        )

    timing = {}
    for name, alpha, beta in SETTINGS:
        pl.seed_everything(0)
        student = RealUIDModule(
            TeacherOptions(net=teacher.net, process=teacher.process),
            Objective(alpha, beta),
            OptimisationOptions(generator_lr=args.lr, fake_lr=args.lr, warmup_steps=100),
        )
        ema, timer = EMA([STUDENT_EMA]), IterationTimer()
        seconds = fit(student, args.iterations, [ema, timer])
        timing[name] = timer.per_iteration
        rows.append(
            {
                "model": f"{name}, raw",
                "steps": 1,
                "energy_distance": score(student.sample(10_000, noise.manual_seed(1))),
                "seconds": seconds,
            }
        )
        with ema.swapped(student, STUDENT_EMA):
            rows.append(
                {
                    "model": f"{name}, EMA {STUDENT_EMA}",
                    "steps": 1,
                    "energy_distance": score(student.sample(10_000, noise.manual_seed(1))),
                    "seconds": None,
                }
            )

    lightning_s = timing[SETTINGS[1][0]]
    plain_s = plain_loop_per_iteration(student, 1200)
    teacher_100 = rows[3]["energy_distance"]
    best = min(r["energy_distance"] for r in rows[4:])
    summary = {
        "benchmark": "toy2d",
        "machine": f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}",
        "iterations": args.iterations,
        "teacher_ed": {str(r["steps"]): r["energy_distance"] for r in rows[1:4]},
        "students": {r["model"]: r["energy_distance"] for r in rows[4:]},
        "best_student_over_teacher100": best / teacher_100,
        "teacher1_over_best_student": rows[1]["energy_distance"] / best,
        "lightning_ms_per_iteration": 1e3 * lightning_s,
        "plain_ms_per_iteration": 1e3 * plain_s,
        "lightning_overhead": lightning_s / plain_s - 1,
        "total_seconds": time.perf_counter() - total_start,
    }
    print("| model | steps | energy distance ↓ | wall time (s) |\n|---|---|---|---|")
    for r in rows:
        ed = "-" if r["energy_distance"] is None else f"{r['energy_distance']:.4f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        print(f"| {r['model']} | {r['steps']} | {ed} | {seconds} |")
    print(
        f"\nbest one-step / teacher 100 steps: {summary['best_student_over_teacher100']:.2f}×; "
        f"teacher 1 step / best one-step: {summary['teacher1_over_best_student']:.0f}×; "
        f"Lightning {1e3 * lightning_s:.2f} ms/iteration vs plain PyTorch "
        f"{1e3 * plain_s:.2f} ms ({100 * summary['lightning_overhead']:+.0f}%); total {summary['total_seconds']:.0f} s"
    )
    print(json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, **summary}, indent=1))


if __name__ == "__main__":
    main()
