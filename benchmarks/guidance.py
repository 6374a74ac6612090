"""Guidance benchmark: FD-digits and class accuracy of a classifier-free-guided digits teacher and of one-step
students distilled from it (fixed w, a range of w, data-free vs RealUID).

    python benchmarks/guidance.py [--iterations 1200] [--students fixed2 range fixed2_realuid fixed4 fixed1 fixed1.5]
    python benchmarks/guidance.py --students range --out benchmarks/results/guidance_range.json

The teacher is checkpoints/digits_teacher_cond.ckpt (configs/digits_teacher_cond.yaml: cond_drop_prob 0.1). Every
model draws ``--num-samples`` samples from the same noise with labels 0 … 9 in turn, scored against the 1 797 real
digits: FD-digits (Fréchet distance in the features of the shipped digit classifier, DigitsFeatures) and class
accuracy = the share of samples the same classifier assigns to the label they were drawn for. Teacher: 100 Euler
steps at w ∈ --scales. Students (convergence.recipe through convergence.distil: K = ``--fake-updates`` (5), Adam
(0, 0.999), ``--lr`` for both networks, warm-up 50, cosine to 0.1, EMA ``--decays`` (0.99, 0.995) with warm-up,
t_G = ``--generator-time``, the fake model starting as ``--fake-init`` (scratch) and trained alone for the first
``--fake-warmup`` iterations (0), a fine-tuning stage from ``--fine-tune-at`` (none) at ``--fine-tune-lr-ratio``
times the learning rates (the fake model restarting as the teacher), scored at the last decay;
``--iterations`` iterations each, one at a time): fixed w (guidance_scale), the range [1, 4] (guidance_range, scored
at each w), data-free UID (α = β = 1) or RealUID (α = 0.94, β/α = 0.98). Results are written to --out after every
student, so a cut run keeps what it finished.

Which guided teacher a model is closest to: every row also gives the FD-digits of its samples to the teacher's at each
w of --scales drawn from a second noise (seed 3), ``fd_to_teacher``; on a teacher row the entry at its own w is the
sampling floor of that distance. Prints a table and one JSON line.

Distilling the guided sampler's distribution instead of its field (``refit2``, ``refit1.5``): f*_w is not the marginal
field of any distribution, so a student matched to it need not land on the teacher's samples at w. These students first
fine-tune the teacher by flow matching on ``--refit-samples`` of its own samples at w (``--teacher-steps`` Euler steps,
labels 0 … 9 in turn, noise seed 4; ``--refit-steps`` updates of batch 128 at ``--refit-lr``, EMA 0.999, training seed
``--seed``; ``realuid_lightning.refit.fine_tune``, what ``realuid refit`` runs), whose unguided field is then a
marginal one, and distil that network unguided (w = 1); its own row at 100 steps is reported beside them.
``refit_range`` does the same for the range [1, 4]: ``--refit-samples`` samples at each of ``--refit-points`` evenly
spaced w (noise seeds 4, 5, …), fitted by the teacher with a zero-initialised w input (``realuid refit
--guidance-range``), whose student (guidance_range [1, 4]) starts from it, its e(w) included; the refit teacher is
reported at each w of --scales; ``--refit-anchor`` anchors its w = 1 samples on the teacher's own prediction (what
``realuid refit --guidance-range`` does by default); ``--refit-out`` also writes the refit teacher as ``realuid refit``
does, to sample or score it at any w afterwards, and ``--refit-in`` loads such a file instead of refitting (the same
seed then repeats the run that wrote it, at a fraction of its time). ``refit_range_fixed1`` / ``2`` / ``4`` are
dedicated students of that same refit teacher, each pinned to one w (guidance_scale w): what sharing one student across
w costs, on one teacher. A run refits once for all the students that share a refit's w. ``--guidance-points P`` draws a
range student's w on P evenly spaced points of [1, 4] (``generator.guidance_points``: the refit's grid, --refit-points);
``--scale-teachers W=CKPT …`` gives a range student a teacher per w (``teacher.scale_teachers``: refits on one w each,
or the teacher itself at w = 1), while it still starts from the refit on the range.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
import warnings
from pathlib import Path

import convergence  # the distillation recipe and the UID / RealUID settings of the convergence study
import torch

from realuid_lightning import EMA, DigitsDataModule, RealUIDModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.errors import ConfigError
from realuid_lightning.evaluation import class_accuracy
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets import DigitsFeatures
from realuid_lightning.nets.guidance import Guided, ScaleConditioned, range_scales
from realuid_lightning.nets.labels import cycled_labels
from realuid_lightning.refit import REFIT_EMA, fine_tune, guided_samples, teacher_checkpoint
from realuid_lightning.sampler import Sampler
from realuid_lightning.sampling import sample_teacher
from realuid_lightning.saving import check_writable, save_atomic

STUDENTS = {  # name: (TeacherOptions, GeneratorOptions, setting of convergence.SETTINGS: the (α, β) pairs)
    "fixed1": ({"guidance_scale": 1.0}, {}, "uid"),
    "fixed1.5": ({"guidance_scale": 1.5}, {}, "uid"),
    "fixed2": ({"guidance_scale": 2.0}, {}, "uid"),
    "fixed4": ({"guidance_scale": 4.0}, {}, "uid"),
    "range": ({}, {"guidance_range": (1.0, 4.0)}, "uid"),
    "fixed2_realuid": ({"guidance_scale": 2.0}, {}, "realuid0.98"),
    "refit2": ({"guidance_scale": 1.0}, {}, "uid"),
    "refit1.5": ({"guidance_scale": 1.0}, {}, "uid"),
    "refit4": ({"guidance_scale": 1.0}, {}, "uid"),
    "refit_range": ({}, {"guidance_range": (1.0, 4.0)}, "uid"),
    **{f"refit_range_fixed{w:g}": ({"guidance_scale": w}, {}, "uid") for w in (1.0, 2.0, 4.0)},
}
REFITS = {  # the w of the refit's samples
    "refit2": 2.0,
    "refit1.5": 1.5,
    "refit4": 4.0,
    **{name: (1.0, 4.0) for name in STUDENTS if name.startswith("refit_range")},
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="checkpoints/digits_teacher_cond.ckpt")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    convergence.add_student_arguments(parser)
    parser.add_argument("--generator-time", type=float, default=0.0, help="the students' t_G")
    parser.add_argument("--teacher-steps", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--refit-samples", type=int, default=4000, help="refit students: guided teacher samples")
    parser.add_argument("--refit-steps", type=int, default=2000, help="refit students: fine-tuning updates")
    parser.add_argument("--refit-lr", type=float, default=1e-4, help="refit students: fine-tuning learning rate")
    parser.add_argument("--refit-points", type=int, default=4, help="refit_range: evenly spaced w, each with samples")
    parser.add_argument("--refit-anchor", action="store_true", help="refit_range: anchor w = 1 on the teacher")
    parser.add_argument("--refit-out", default=None, help="refit students: also write the (last) refit teacher here")
    parser.add_argument(
        "--refit-in", default=None, help="refit students: load this refit teacher (--refit-out's) instead of refitting"
    )
    parser.add_argument(
        "--guidance-points", type=int, default=None, help="range students: w on N evenly spaced points of [1, 4]"
    )
    parser.add_argument(
        "--scale-teachers",
        nargs="+",
        default=None,
        metavar="W=CKPT",
        help="range students: the game's teacher at each W is CKPT (teacher.scale_teachers; e.g. 2=refit_w2.ckpt)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/guidance.json")
    parser.add_argument("--resume", default=None, help="an earlier --out file: keep its rows, train only new students")
    return parser.parse_args()


class Scorer:
    """FD-digits and class accuracy of samples drawn for ``labels`` (default: 0 … 9 in turn), and their FD-digits to
    each of the ``references`` (the guided teacher's samples, by w)."""

    def __init__(self, num: int) -> None:
        data = DigitsDataModule()
        self.real, self.real_labels = data.real_images(), data.labels
        self.features, self.labels = DigitsFeatures.pretrained(), cycled_labels(0, num, 10)
        self.references: dict[float, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        labels = self.labels if labels is None else labels
        return {
            "fd": feature_frechet_distance(samples, self.real, self.features),
            "accuracy": class_accuracy(self.features, samples, labels),
            "fd_to_teacher": {
                str(w): feature_frechet_distance(samples, ref, self.features) for w, ref in self.references.items()
            },
        }

    def floor(self) -> dict[str, float]:
        """Real digits: FD of the even- to the odd-indexed half, the classifier's accuracy on all of them."""
        return {
            "fd": feature_frechet_distance(self.real[::2], self.real[1::2], self.features),
            "accuracy": self(self.real, self.real_labels)["accuracy"],
        }


def refit_teacher(net: torch.nn.Module, process, w: float | tuple[float, float], args: argparse.Namespace):
    """The teacher fine-tuned on ``--refit-samples`` of its own samples guided at ``w``, or at each of
    ``--refit-points`` w across the range ``w`` into a network that reads w (the module docstring's recipe, through
    :mod:`realuid_lightning.refit`'s functions, as ``realuid refit`` does): its EMA-0.999 network, frozen; or the one
    ``--refit-in`` holds."""
    if args.refit_in:
        return loaded_refit(args.refit_in, w)
    teacher = Sampler(net, process, tuple(args.data_shape), args.teacher_steps, "euler")
    ranged = isinstance(w, tuple)
    scales = range_scales(w, args.refit_points) if ranged else [w]
    samples, labels, drawn = guided_samples(teacher, scales, args.refit_samples, 4, args.refit_samples, "cpu")
    fitted = {"scales": drawn, "anchored": args.refit_anchor} if ranged else {}
    trainer, ema = fine_tune(net, process, samples, labels, args.refit_steps, args.refit_lr, args.seed, **fitted)
    if args.refit_out:  # what realuid refit writes, to sample or score at any w later
        save_atomic(teacher_checkpoint(trainer, ema), args.refit_out)
    module = trainer.lightning_module
    with ema.swapped(module, REFIT_EMA):
        return copy.deepcopy(module.net).eval().requires_grad_(False)


def loaded_refit(path: str, w: float | tuple[float, float]) -> torch.nn.Module:
    """The refit teacher that ``--refit-out`` or ``realuid refit`` wrote at ``path``, frozen; a one-line error unless
    it reads w on the range ``w`` (a refit on one w has no w input, and its checkpoint does not say which w)."""
    net, _, _ = network_from_checkpoint(load_checkpoint(path, "--refit-in"), ema=None, what=f"--refit-in {path}")
    found = (net.w_min, net.w_max) if isinstance(net, ScaleConditioned) else None
    if found != (w if isinstance(w, tuple) else None):
        held = f"reads w on {list(found)}" if found else "has no w input (a refit on one w)"
        wanted = f"a refit on w in {list(w)}" if isinstance(w, tuple) else f"a refit on w = {w:g}, without a w input"
        raise ConfigError(f"--refit-in {path} {held}; these students need {wanted}")
    return net.eval().requires_grad_(False)


def refit_rows(name: str, refit: torch.nn.Module, process, noise: torch.Tensor, score, args) -> list[dict]:
    """The refit teacher at ``--teacher-steps`` Euler steps: unguided (it samples its samples' w), or at each of
    --scales through its w input (refit on a range)."""
    w, rows = REFITS[name], []
    for scale in args.scales if isinstance(w, tuple) else [None]:
        net = refit if scale is None else Guided(refit, scale)
        samples = sample_teacher(net, process, noise, args.teacher_steps, cond=score.labels)
        model = f"teacher fine-tuned on its w = {w:g} samples" if scale is None else f"teacher refit on w in {list(w)}"
        rows.append({"model": model, "setting": "-", "w": 1.0 if scale is None else scale})
        rows[-1] |= {"nfe": args.teacher_steps, **score(samples)}
        print(rows[-1], flush=True)
    return rows


def distil_student(
    name: str, net: torch.nn.Module, process, refits: dict, args: argparse.Namespace
) -> tuple[RealUIDModule, EMA, float, torch.nn.Module]:
    """Student ``name`` trained by the recipe for ``--iterations`` iterations (a refit student: after its teacher's
    fine-tuning, done once per run for each refit's w and kept in ``refits``); (module, its EMA, seconds, the
    teacher it distilled)."""
    teacher, generator, setting = STUDENTS[name]
    if "guidance_range" in generator and args.guidance_points is not None:  # w drawn on a grid (a refit's)
        generator = {**generator, "guidance_points": args.guidance_points}
    if "guidance_range" in generator and args.scale_teachers:  # a teacher per w (their checkpoints hold EMA weights)
        scales = dict(item.split("=", 1) for item in args.scale_teachers)
        teacher = {**teacher, "teacher_ema": None, "scale_teachers": scales}
    recipe = convergence.student_recipe(args, args.iterations, generator_time=args.generator_time)
    start = time.perf_counter()
    if name in REFITS and REFITS[name] not in refits:
        refits[REFITS[name]] = refit_teacher(net, process, REFITS[name], args)
    net = refits.get(REFITS.get(name), net)
    student, ema = convergence.distil(
        net, process, setting, args.seed, recipe, teacher=teacher, generator=generator, conditional=True
    )
    return student, ema, time.perf_counter() - start, net


def student_rows(
    name: str, student: RealUIDModule, ema: EMA, noise: torch.Tensor, score: Scorer, args: argparse.Namespace
) -> list[dict]:
    """Rows of the EMA student at its w (fixed), or at each of --scales (range)."""
    teacher, generator, setting = STUDENTS[name]
    refit_w = REFITS.get(name)  # a refit at one w is distilled unguided: its samples' w
    scales = args.scales if generator else [refit_w if isinstance(refit_w, float) else teacher["guidance_scale"]]
    rows = []
    with torch.no_grad(), ema.swapped(student, args.decays[-1]):
        for w in scales:
            scale = torch.full((len(noise),), w) if generator else None
            samples = student.generator(noise, score.labels, w=scale)
            rows.append({"model": name, "setting": setting, "w": w, "nfe": 1, **score(samples)})
    return rows


def teacher_references(net: torch.nn.Module, process, noise: torch.Tensor, score: Scorer, args: argparse.Namespace):
    """The teacher's samples at each of ``--scales`` from ``noise`` (the second noise), the scorer's references."""
    for w in args.scales:
        score.references[w] = sample_teacher(Guided(net, w), process, noise, args.teacher_steps, cond=score.labels)


def teacher_rows(net: torch.nn.Module, process, noise: torch.Tensor, score: Scorer, args: argparse.Namespace) -> list:
    """The real-digits floor and the teacher at ``--teacher-steps`` Euler steps, guided at each of ``--scales``."""
    rows = [{"model": "real digits, half vs half", "setting": "-", "w": 0, "nfe": 0, **score.floor()}]
    for w in args.scales:
        samples = sample_teacher(Guided(net, w), process, noise, args.teacher_steps, cond=score.labels)
        rows.append({"model": "teacher", "setting": "-", "w": w, "nfe": args.teacher_steps * (1 if w == 1 else 2)})
        rows[-1] |= score(samples)
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | objective | w | NFE | FD-digits ↓ | class accuracy ↑ | FD-digits to the teacher at w = … |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        to_teacher = ", ".join(f"{w}: {fd:.2f}" for w, fd in r.get("fd_to_teacher", {}).items()) or "—"
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['w']:g} | {r['nfe']} | {r['fd']:.2f} | {100 * r['accuracy']:.1f} % "
            f"| {to_teacher} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = arguments()
    check_writable([("--refit-out", None if args.refit_out is None else Path(args.refit_out).parent)])  # before an hour
    if args.refit_in and not Path(args.refit_in).is_file():
        raise ConfigError(f"--refit-in {args.refit_in!r} does not exist or is not a file")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start, score = time.perf_counter(), Scorer(args.num_samples)
    net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
    args.data_shape = record.data_shape
    noise = torch.randn(args.num_samples, *record.data_shape, generator=torch.Generator().manual_seed(1))
    second_noise = torch.randn(args.num_samples, *record.data_shape, generator=torch.Generator().manual_seed(3))
    teacher_references(net, process, second_noise, score, args)
    earlier = json.loads(Path(args.resume).read_text()) if args.resume else {"rows": [], "train_seconds": {}}
    if earlier.get("ema", args.decays[-1]) != args.decays[-1]:
        raise SystemExit(f"--resume {args.resume} scored EMA {earlier['ema']}; --decays must end in it: {args.decays}")
    rows, seconds, refits = earlier["rows"], earlier["train_seconds"], {}
    if not rows:
        rows = teacher_rows(net, process, noise, score, args)
    for name in [None, *[s for s in args.students if s not in seconds]]:  # None: the rows so far, saved first
        if name is not None:
            refitted = len(refits)
            student, ema, seconds[name], distilled = distil_student(name, net, process, refits, args)
            if len(refits) > refitted:  # a new fine-tuned teacher: its rows, once
                rows += refit_rows(name, distilled, process, noise, score, args)
            rows += student_rows(name, student, ema, noise, score, args)
            print(rows[-1], f"{seconds[name]:.0f} s", flush=True)
        result = {
            "benchmark": "guidance",
            "teacher": args.teacher,
            "recipe": vars(args),
            "ema": args.decays[-1],
            "rows": rows,
            "train_seconds": seconds,
            "total_seconds": earlier.get("total_seconds", 0.0) + time.perf_counter() - start,
            "threads": torch.get_num_threads(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(rows))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
