"""Convergence study: FD of one-step students against generator updates, per setting and seed,
with the recipe as options.

    python benchmarks/convergence.py --settings uid realuid0.98 realuid1.02 --seeds 0 1 2 --iterations 18000 \
        --out benchmarks/results/convergence_digits.json
    python benchmarks/convergence.py --iterations 1800 --final-lr-ratio 0.1 --settings realuid0.98 \
        --seeds 0   # a recipe probe
    python benchmarks/convergence.py --merge run_a.json run_b.json --out study.json   # one summary of separate runs

Each run distils the teacher with ``RealUIDModule`` in a plain Lightning Trainer (one CPU thread is the protocol) and
scores the raw generator and each EMA decay every ``--eval-every`` generator updates: FD-digits of ``--num-samples``
samples from fixed noise against the real digits (8×8: the 1 797 sklearn digits, floor = FD of interleaved halves;
MNIST: the 1 000 held-out images in MNIST features, floor = FD of 1 000 training images to them). Per run it reports the
final FDs, the settle figure (largest relative deviation of the EMA FD from its mean over the last third of the curve),
and the updates needed to reach the thresholds (the teacher's 10- and 100-step FD, the real-vs-real floor), and of the
final EMA student precision / recall and the memorisation figure (:func:`sample_quality`); per setting the mean ± std
over seeds and the update ratio to UID's final quality. Runs made as separate processes (one thread each, in parallel)
are summarised together with ``--merge``. ``--precision bf16-mixed`` trains under the Trainer's bf16 autocast (fp32
weights; the scores sample in fp32): on this project's CPU (AMD EPYC, AVX512-BF16) 1.63× fewer core seconds per
MNIST RealUID update (README). Prints a table and one JSON line; writes the curves to ``--out``. The
teacher's part (FDs at 1, 10 and 100 Euler steps, the floor, quality) is cached in ``.cache/realuid_convergence``
under a hash of its weights and process, the feature network, the data and the noise (on MNIST it took about 18 min
of CPU, a third of a 60-minute run).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch

from realuid_lightning import (
    EMA,
    DigitsDataModule,
    GeneratorOptions,
    Objective,
    OptimisationOptions,
    RealUIDModule,
    TeacherOptions,
)
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint, spec_of
from realuid_lightning.evaluation.scores import fingerprint
from realuid_lightning.metrics import _nearest, feature_frechet_distance, memorisation, precision_recall, to_unit
from realuid_lightning.nets.features import DigitsFeatures, MNISTFeatures
from realuid_lightning.sampling import sample_teacher
from realuid_lightning.saving import save_atomic

QUALITY = ("precision", "recall", "nn_distance", "nn_distance_real", "memorisation")
# The few-step and guidance students' recipe on this script's defaults (K = 5, batch 64, warm-up 50, clip 1): cosine
# to 0.1x, EMA with warm-up; their --lr is 3e-4 (configs/digits_realuid.yaml up to 2026-12-03) or 1e-4 (it since).
DEFAULT_RECIPE = ["--final-lr-ratio", "0.1", "--ema-warmup"]
CACHE = Path(".cache/realuid_convergence")  # the teacher's FDs and quality, under a hash of what fixes them
SETTINGS = {"uid": (1.0, 1.0), "realuid0.98": (0.94, 0.94 * 0.98), "realuid1.02": (0.94, 0.94 * 1.02)}


def clocks() -> torch.Tensor:
    """Wall and process CPU time, seconds."""
    return torch.tensor([time.perf_counter(), time.process_time()], dtype=torch.float64)


class Curve(pl.Callback):
    """FD of the raw generator and each EMA decay every ``every`` generator updates, with the wall time and the
    process's CPU time (one thread: the core time, whatever else the machine runs) spent training so far."""

    def __init__(self, every: int, score, noise: torch.Tensor) -> None:
        self.every, self.score, self.noise, self.points = every, score, noise, []
        self.scoring = torch.zeros(2)  # wall, CPU seconds spent scoring

    def _evaluate(self, trainer: pl.Trainer, module: RealUIDModule) -> None:
        start = clocks()
        wall, cpu = (start - self.t0 - self.scoring).tolist()
        point = {
            "updates": int(module.generator_updates),
            "iteration": trainer.global_step,
            "seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
        }
        point |= self.scores(module, next(c for c in trainer.callbacks if isinstance(c, EMA)))
        self.points.append(point)
        self.scoring += clocks() - start
        print(point, flush=True)

    @torch.no_grad()
    def scores(self, module: RealUIDModule, ema: EMA) -> dict:
        """FD of the raw generator and of each EMA decay of the trainer's ``ema`` on the fixed noise."""
        point = {"raw": round(self.score(module.generator(self.noise)), 3)}
        for decay in ema.decays:
            with ema.swapped(module, decay):
                point[f"ema_{decay}"] = round(self.score(module.generator(self.noise)), 3)
        return point

    def on_train_start(self, trainer, pl_module):
        self.t0 = clocks()

    def _new(self, updates: int) -> bool:
        return updates > 0 and (not self.points or self.points[-1]["updates"] != updates)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        updates = int(pl_module.generator_updates)
        if updates % self.every == 0 and self._new(updates):
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        """The final point too, where the run does not end on a multiple of ``every``."""
        if self._new(int(pl_module.generator_updates)):
            self._evaluate(trainer, pl_module)


def fit_quietly(
    module: pl.LightningModule,
    data: pl.LightningDataModule,
    iterations: int,
    callbacks: list,
    precision: str = "32-true",
) -> pl.Trainer:
    """Train ``module`` for ``iterations`` iterations on the CPU at the Trainer's ``precision`` without logger,
    checkpoints or progress bar (the benchmarks' one Trainer)."""
    trainer = pl.Trainer(
        max_steps=iterations,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    return trainer


@torch.no_grad()
def sample_quality(samples: torch.Tensor, data: DigitsDataModule, features: torch.nn.Module, mnist: bool) -> dict:
    """Precision / recall (k = 3) against the reference images and the memorisation figure, in the FD features.

    MNIST: d(samples → training set) / d(held-out → training set) (< 1: closer to the training images than fresh
    images are). 8×8 digits train on all 1 797 images, so the reference distance is each training image's distance
    to its nearest other training image (leave-one-out); the ratio reads the same way.
    """
    phi = lambda x: torch.cat([features(to_unit(b)).double() for b in x.split(1000)])
    train, fake = phi(data.real_images()), phi(samples)
    reference = phi(data.heldout_images()) if mnist else train
    precision, recall = precision_recall(reference, fake)
    if mnist:
        d_fake, d_ref, ratio = memorisation(train, fake, reference)
    else:
        d_fake, d_ref = float(_nearest(fake, train).mean()), float(_nearest(train, train, exclude_self=True).mean())
        ratio = d_fake / d_ref
    return {
        "precision": precision,
        "recall": recall,
        "nn_distance": d_fake,
        "nn_distance_real": d_ref,
        "memorisation": ratio,
    }


def settle(values: list[float]) -> float:
    """Largest |v − mean|/mean over the last third of a curve (0.2 = within ±20%)."""
    tail = values[len(values) - max(2, len(values) // 3) :]
    mean = statistics.fmean(tail)
    return max(abs(v - mean) for v in tail) / mean


def first_reach(points: list[dict], key: str, threshold: float, unit: str = "updates") -> float | None:
    """Generator updates (or another ``unit`` of the curve: "cpu_seconds") at the first evaluation with
    FD ≤ threshold (None if never, or for a curve recorded without that unit)."""
    return next((p.get(unit) for p in points if p[key] <= threshold), None)


def minutes(seconds: dict) -> dict:
    """A :func:`spread` of seconds in minutes."""
    return {k: v / 60 if k != "n" and v is not None else v for k, v in seconds.items()}


def mean_std(v: dict, count: int) -> str:
    """'mean ± std' of a spread; '(n)' after it where fewer than ``count`` runs reached it; '—' where none did."""
    if v["mean"] is None:
        return "—"
    return f"{v['mean']:.2f} ± {v['std']:.2f}" + (f" ({v['n']})" if v["n"] < count else "")


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The study's options (the distillation recipe among them) from ``argv`` (default: the command line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="checkpoints/digits_teacher.ckpt")
    parser.add_argument("--data", default="sklearn", choices=["sklearn", "mnist5k"])
    parser.add_argument("--settings", nargs="+", default=["uid", "realuid0.98", "realuid1.02"], choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iterations", type=int, default=1800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4, help="generator learning rate")
    parser.add_argument("--fake-lr", type=float, default=None, help="fake-model learning rate (default: --lr)")
    parser.add_argument("--fake-updates", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--final-lr-ratio", type=float, default=1.0)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--fake-init", default="scratch", choices=["scratch", "teacher"])
    add_stage_arguments(parser)
    parser.add_argument("--generator-time", type=float, default=0.0, help="the one-step generator's t_G")
    parser.add_argument("--adam-beta1", type=float, default=0.0)
    parser.add_argument("--decays", nargs="+", type=float, default=[0.99, 0.995])
    parser.add_argument("--ema-warmup", action="store_true", help="EMA(warmup=True): d_n = min(d, (1 + n)/(10 + n))")
    parser.add_argument("--eval-every", type=int, default=50, help="generator updates between evaluations")
    parser.add_argument("--num-samples", type=int, default=2000)
    add_precision_argument(parser)
    parser.add_argument("--out", default="benchmarks/results/convergence.json")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="summarise the runs of earlier --out files (same recipe but seeds/settings) instead of training",
    )
    return parser.parse_args(argv)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: the Trainer's, fp32 or bf16 autocast (faster on CPUs with bf16 instructions)."""
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=["32-true", "bf16-mixed"],
        help="the Trainer's precision (bf16-mixed: bf16 autocast, fp32 weights; scored in fp32)",
    )


def iteration_or_share(text: str) -> int | float:
    """An iteration (an int) or a share of the run (a float), as ``OptimisationOptions.fine_tune_at`` reads it."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The stages of the run: fake-only iterations first, and the fine-tuning stage (OptimisationOptions)."""
    parser.add_argument("--fake-warmup", type=int, default=0, help="W, iterations that update the fake model alone")
    parser.add_argument(
        "--fine-tune-at",
        type=iteration_or_share,
        default=0,
        help="the fine-tuning stage's start: an iteration, or a share of --iterations in (0, 1) (0: none)",
    )
    parser.add_argument("--fine-tune-lr-ratio", type=float, default=1.0, help="its learning rates / the first stage's")


def add_student_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`recipe` that the few-step and guidance benchmarks expose, with their shared defaults."""
    add_precision_argument(parser)
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=3e-4, help="both networks' learning rate (the shipped rows: 3e-4)")
    parser.add_argument("--fake-lr", type=float, default=None, help="the fake model's learning rate (default: --lr)")
    parser.add_argument("--fake-updates", type=int, default=5, help="K, fake-model updates per generator update")
    parser.add_argument(
        "--decays", nargs="+", type=float, default=[0.99, 0.995], help="EMA decays kept; students scored at the last"
    )
    parser.add_argument("--fake-init", default="scratch", choices=["scratch", "teacher"], help="how f starts")
    add_stage_arguments(parser)


def recipe(
    iterations: int,
    lr: float,
    generator_time: float = 0.0,
    fake_updates: int = 5,
    decays: list[float] | None = None,
    fake_init: str = "scratch",
    precision: str = "32-true",
    fake_warmup: int = 0,
    fine_tune_at: int | float = 0,
    fine_tune_lr_ratio: float = 1.0,
    fake_lr: float | None = None,
) -> argparse.Namespace:
    """DEFAULT_RECIPE for ``iterations`` iterations at learning rate ``lr`` (both networks; the fake model's ``fake_lr``
    where given), the generator at t_G, ``fake_updates`` (K) fake-model updates per generator update, EMA ``decays``
    (default: 0.99 and 0.995), the fake model(s) starting as ``fake_init`` and trained alone for the first
    ``fake_warmup`` iterations, a fine-tuning stage from ``fine_tune_at`` at ``fine_tune_lr_ratio`` times the learning
    rates, trained at the Trainer's ``precision``."""
    options = [f"--iterations={iterations}", f"--lr={lr}", f"--generator-time={generator_time}"]
    options += [f"--fake-init={fake_init}", f"--precision={precision}", f"--fake-warmup={fake_warmup}"]
    options += [f"--fine-tune-at={fine_tune_at}", f"--fine-tune-lr-ratio={fine_tune_lr_ratio}"]
    options += [f"--fake-updates={fake_updates}", *(["--decays", *map(str, decays)] if decays else [])]
    options += [f"--fake-lr={fake_lr}"] if fake_lr is not None else []
    return arguments(DEFAULT_RECIPE + options)


def student_recipe(args: argparse.Namespace, iterations: int, **options) -> argparse.Namespace:
    """:func:`recipe` for ``iterations`` iterations from the options :func:`add_student_arguments` gave ``args``, and
    ``options`` (e.g. the guidance benchmark's ``generator_time``)."""
    shared = ("fake_updates", "fake_lr", "decays", "fake_init", "precision", "fake_warmup")
    shared += ("fine_tune_at", "fine_tune_lr_ratio")
    return recipe(iterations, args.lr, **{name: getattr(args, name) for name in shared}, **options)


def generator_updates(args: argparse.Namespace) -> int:
    """Generator updates in ``args.iterations``: after ``args.fake_warmup`` fake-only iterations, one per cycle of
    K = ``args.fake_updates`` fake updates and one generator update, the cycles restarting at the fine-tuning stage."""
    return stage_options(args).update_counts(args.iterations)[1]


def stage_options(args: argparse.Namespace, **options) -> OptimisationOptions:
    """OptimisationOptions with the K, fake-only iterations and fine-tuning stage of ``args``, and ``options``."""
    return OptimisationOptions(
        fake_updates=args.fake_updates,
        fake_warmup=args.fake_warmup,
        fine_tune_at=args.fine_tune_at,
        fine_tune_lr_ratio=args.fine_tune_lr_ratio,
        **options,
    )


def distil(
    net: torch.nn.Module,
    process,
    setting: str,
    seed: int,
    args: argparse.Namespace,
    callbacks: list[pl.Callback] = (),
    teacher: dict | None = None,
    generator: dict | None = None,
    conditional: bool = False,
) -> tuple[RealUIDModule, EMA]:
    """A student of ``setting`` trained by the recipe of ``args`` for ``args.iterations`` iterations on the digits of
    ``args.data`` (``teacher``, ``generator``: more TeacherOptions / GeneratorOptions, e.g. guidance or a few-step
    schedule; ``conditional``: labelled digits); (student, its EMA)."""
    alpha, beta = SETTINGS[setting]
    pl.seed_everything(seed, verbose=False)
    optimisation = stage_options(
        args,
        generator_lr=args.lr,
        fake_lr=args.fake_lr or args.lr,
        adam_betas=(args.adam_beta1, 0.999),
        warmup_steps=args.warmup,
        final_lr_ratio=args.final_lr_ratio,
        grad_clip=args.grad_clip,
    )
    student = RealUIDModule(
        TeacherOptions(net=net, process=process, **(teacher or {})),
        Objective(alpha, beta),
        optimisation,
        GeneratorOptions(**({"fake_init": args.fake_init, "generator_time": args.generator_time} | (generator or {}))),
    )
    ema = EMA(args.decays, warmup=args.ema_warmup)
    mnist = args.data == "mnist5k"
    data = DigitsDataModule(
        source=args.data,
        batch_size=args.batch_size,
        heldout=1000 if mnist else 0,
        conditional=conditional,
    )
    fit_quietly(student, data, args.iterations, [ema, *callbacks], args.precision)
    return student, ema


def run_study(args: argparse.Namespace) -> tuple[dict, dict, list[dict]]:
    """(teacher FDs, teacher quality at 100 steps, runs): trains and scores every setting and seed."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    mnist = args.data == "mnist5k"  # MNIST: 1 000 images held out, scored against them in MNIST features
    data = DigitsDataModule(source=args.data, batch_size=args.batch_size, heldout=1000 if mnist else 0)
    data.setup("fit")
    real = data.heldout_images() if mnist else data.real_images()
    features = (MNISTFeatures if mnist else DigitsFeatures).pretrained()
    score = lambda samples: feature_frechet_distance(samples, real, features)
    net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
    noise = torch.randn(args.num_samples, *record.data_shape, generator=torch.Generator().manual_seed(1))
    key = fingerprint((fingerprint(net), spec_of(process), fingerprint(features), args.data, noise.shape, 1))
    cache = CACHE / f"teacher_{key[:16]}.pt"
    if cache.exists():  # 111 Euler steps of 1 000 samples: minutes on MNIST
        teacher, teacher_quality = torch.load(cache, weights_only=True)
    else:
        train = data.real_images()[: len(real)] if mnist else real[::2]  # MNIST: as many training images as held out
        teacher = {"real_floor": feature_frechet_distance(train, real if mnist else real[1::2], features)}
        samples = {steps: sample_teacher(net, process, noise, steps) for steps in (1, 10, 100)}
        teacher |= {f"{steps}": score(x) for steps, x in samples.items()}
        teacher_quality = sample_quality(samples[100], data, features, mnist)
        save_atomic((teacher, teacher_quality), cache)
    print("teacher / floor:", {k: round(v, 3) for k, v in teacher.items()}, "100 steps:", teacher_quality, flush=True)

    runs = []
    for setting in args.settings:
        for seed in args.seeds:
            curve = Curve(args.eval_every, score, noise)
            t0 = time.perf_counter()
            student, ema = distil(net, process, setting, seed, args, [curve])
            key = f"ema_{args.decays[-1]}"
            with torch.no_grad(), ema.swapped(student, args.decays[-1]):
                quality = sample_quality(student.generator(noise), data, features, mnist)
            values = [p[key] for p in curve.points]
            run = {
                "setting": setting,
                "seed": seed,
                "seconds": time.perf_counter() - t0 - curve.scoring[0].item(),
                "cpu_seconds": curve.points[-1]["cpu_seconds"],
                "final": curve.points[-1],
                "quality": quality,
                "settle": settle(values),
                "reach": {name: first_reach(curve.points, key, teacher[name]) for name in ("10", "100", "real_floor")},
                "curve": curve.points,
            }
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
    return teacher, teacher_quality, runs


def summarise(args: argparse.Namespace, teacher: dict, teacher_quality: dict, runs: list[dict]) -> None:
    """Per-setting mean ± std, the update ratio to UID's final quality; a table, one JSON line, the --out file."""
    key = f"ema_{args.decays[-1]}"
    summary = {}
    for setting in args.settings:
        mine = [r for r in runs if r["setting"] == setting]
        summary[setting] = {
            "final_" + k: spread([r["final"][k] for r in mine]) for k in ("raw", *[f"ema_{d}" for d in args.decays])
        }
        summary[setting]["settle"] = spread([r["settle"] for r in mine])
        summary[setting]["reach"] = {
            name: spread([r["reach"][name] for r in mine]) for name in ("10", "100", "real_floor")
        }
        scored = [r["quality"] for r in mine if "quality" in r]  # runs made before the quality figures have none
        summary[setting]["quality"] = {k: spread([q[k] for q in scored]) for k in QUALITY}
        summary[setting]["seconds"] = spread([r["seconds"] for r in mine])
        summary[setting]["cpu_seconds"] = spread([r.get("cpu_seconds") for r in mine])
        summary[setting]["cpu_seconds_to_floor"] = spread(
            [first_reach(r["curve"], key, teacher["real_floor"], "cpu_seconds") for r in mine]
        )
    if "uid" in summary:  # updates each setting needs to reach UID's final EMA quality (mean over UID seeds)
        target = summary["uid"][f"final_{key}"]["mean"]
        for setting in args.settings:
            reach = [first_reach(r["curve"], key, target) for r in runs if r["setting"] == setting]
            uid_final = generator_updates(args)
            summary[setting]["updates_to_uid_final"] = spread(reach)
            summary[setting]["ratio_to_uid"] = spread([u / uid_final for u in reach if u is not None])
    print(
        f"\nteacher FD 1/10/100 steps: {teacher['1']:.2f} / {teacher['10']:.2f} / {teacher['100']:.2f}; "
        f"real floor {teacher['real_floor']:.2f}"
    )
    print(
        f"| setting | seeds | final raw | final {key} | settle (last third) | updates to teacher-10 | to teacher-100 "
        "| to the real floor | core minutes to the floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, s in summary.items():
        count = s["final_raw"]["n"]
        fmt = partial(mean_std, count=count)
        print(
            f"| {setting} | {count} | {fmt(s['final_raw'])} | {fmt(s['final_' + key])} | {fmt(s['settle'])} | "
            f"{fmt(s['reach']['10'])} | {fmt(s['reach']['100'])} | {fmt(s['reach']['real_floor'])} | "
            f"{fmt(minutes(s['cpu_seconds_to_floor']))} |"
        )
    if teacher_quality is None:
        teacher_quality = dict.fromkeys(QUALITY, float("nan"))
    print(
        f"\nteacher (100 steps): precision {teacher_quality['precision']:.3f}, recall {teacher_quality['recall']:.3f}, "
        f"memorisation {teacher_quality['memorisation']:.3f}"
    )
    print("| setting | precision | recall | memorisation (nn distance / real's) |")
    print("|---|---|---|---|")
    for setting, s in summary.items():
        q, fmt = s["quality"], partial(mean_std, count=s["final_raw"]["n"])
        print(f"| {setting} | {fmt(q['precision'])} | {fmt(q['recall'])} | {fmt(q['memorisation'])} |")
    result = {
        "benchmark": "convergence",
        "teacher": args.teacher,
        "data": args.data,
        "recipe": vars(args),
        "teacher_fd": teacher,
        "teacher_quality_100_steps": teacher_quality,
        "summary": summary,
        "threads": getattr(args, "threads", torch.get_num_threads()),
        "train_seconds": sum(r["seconds"] for r in runs),
    }
    print(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**result, "runs": runs}, indent=1))


def merged(args: argparse.Namespace) -> tuple[argparse.Namespace, dict, dict, list[dict]]:
    """(recipe, teacher FDs, teacher quality, runs) of several --out files whose recipes differ only in
    seeds/settings."""
    files = [json.loads(Path(f).read_text()) for f in args.merge]
    defaults = vars(arguments([]))  # options added since a file was written take their default
    for f in files:
        f["recipe"] = defaults | f["recipe"]
    own = ("settings", "seeds", "out", "merge")
    recipes = [{k: v for k, v in f["recipe"].items() if k not in own} for f in files]
    if any(r != recipes[0] for r in recipes):
        raise SystemExit(f"--merge: the files' recipes differ beyond seeds and settings: {recipes}")
    runs = [r for f in files for r in f["runs"]]
    recipe = argparse.Namespace(
        **{
            **files[0]["recipe"],
            "out": args.out,
            "merge": args.merge,
            "threads": files[0]["threads"],
            "settings": list(dict.fromkeys(r["setting"] for r in runs)),
            "seeds": sorted({r["seed"] for r in runs}),
        }
    )
    quality = next((f["teacher_quality_100_steps"] for f in files if "teacher_quality_100_steps" in f), None)
    return recipe, files[0]["teacher_fd"], quality, runs


def main() -> None:
    args = arguments()
    if args.merge:
        summarise(*merged(args))
    else:
        summarise(args, *run_study(args))


if __name__ == "__main__":
    main()
