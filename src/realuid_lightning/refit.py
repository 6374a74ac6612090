"""``realuid refit``: a teacher whose unguided sampler draws what its guided sampler draws.

The guided prediction f*_w = f*(∅) + w·(f*(c) − f*(∅)) is not the marginal field of any distribution, so a one-step
student matched to it (``guidance_scale: w``) need not land on the teacher's samples at w; on digits it over-shoots the
guidance (README, "Classifier-free guidance"). Fine-tuning a copy of the teacher with its own matching loss on N of its
samples at w, labels kept, gives a network whose field is the marginal field of those samples; distilled unguided
(w = 1), its student lands on them.

On a range of w (``--guidance-range``): samples at several w, fitted by a copy of the teacher that reads w through a
zero-initialised embedding (:class:`~realuid_lightning.nets.guidance.ScaleConditioned`, which starts as the teacher);
the checkpoint samples the teacher's distribution at any w of the range with ``--guidance w`` (one network call per
step), and distils with ``generator.guidance_range`` into a student that starts from it, e(w) included.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from realuid_lightning.callbacks.ema import EMA
from realuid_lightning.checkpoint import weights_checkpoint
from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.frozen_teacher import FrozenTeacher
from realuid_lightning.modules.teacher import MatchingModule, scale_of
from realuid_lightning.nets.guidance import ScaleConditioned, check_range, range_scales
from realuid_lightning.nets.labels import class_count, cycled_labels
from realuid_lightning.nonfinite import check_finite_state
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import pick_decay
from realuid_lightning.sampler import Sampler, load_sampler
from realuid_lightning.sampler_options import add_network_options
from realuid_lightning.saving import check_writable, save_atomic

RANGE_HELP = (
    "samples at --points evenly spaced w in [W_MIN, W_MAX], fitted by the teacher with a w input (sample it with "
    "--guidance w, distil it with a guidance_scale or generator.guidance_range inside the range)"
)
NEXT_STEPS = {  # what to do with the written teacher, refit on one w (False) or on a range (True)
    False: "and distil it unguided (no guidance_scale)",
    True: "with --guidance w; distil it with a guidance_scale or generator.guidance_range inside that range",
}
REFIT_EMA = 0.999  # the decay the refit network is read at (the teachers' default teacher_ema)
ANCHOR_HELP = (
    "--guidance-range: at w = 0 and w = 1, where the guided prediction is the unconditional / conditional model's own "
    "marginal field, regress on the teacher's prediction instead of its samples' targets (default: on)"
)


class RefitModule(MatchingModule):
    """L_UM of a network that reads w on the teacher's guided samples (x1, c, w), anchored where f*_w is a marginal
    field: at w = 0 (f*(∅), the unconditional model) and w = 1 (f*(c), the conditional one) the samples' target
    c_t(x0, x1) is replaced by f*_w(t, x_t, c), its conditional expectation E[c_t | x_t, c] without their noise, so
    the refit keeps the teacher at those w instead of learning it back from N samples."""

    def __init__(self, net: nn.Module, process: Process, teacher: nn.Module, lr: float) -> None:
        super().__init__(net, process, lr=lr, warmup_steps=100)
        self.teacher = FrozenTeacher(copy.deepcopy(teacher), "the teacher being refit")

    def matching_target(self, t: Tensor, x_t: Tensor, cond: Tensor | None, batch: Any, target: Tensor) -> Tensor:
        (w,) = scale_of(batch, self.net)
        anchored = torch.isclose(w, torch.ones_like(w)) | (w == 0)
        if not anchored.any():
            return target
        with torch.no_grad():
            own = self.teacher(t[anchored], x_t[anchored], cond[anchored], w[anchored])
        return target.index_put((anchored,), own.to(target.dtype))


def fine_tune(
    net: nn.Module,
    process: Process,
    samples: Tensor,
    labels: Tensor,
    updates: int,
    lr: float = 1e-4,
    seed: int = 0,
    batch_size: int = 128,
    accelerator: str = "cpu",
    scales: Tensor | None = None,
    anchored: bool = True,
) -> tuple[pl.Trainer, EMA]:
    """A copy of ``net`` trained ``updates`` Adam updates of its matching loss L_UM on (``samples``, ``labels``)
    (batches of ``batch_size`` in an order drawn from ``seed``, warm-up 100 updates, then ``lr``), with an EMA of
    decay 0.999, the copy in train mode as the teacher trained; (the trainer, the EMA callback): the network is
    ``trainer.lightning_module.net``. ``scales``: each sample's guidance scale w, read by ``net`` through a
    zero-initialised w input on [min w, max w] (:class:`ScaleConditioned`, its weights drawn from ``seed``);
    ``anchored`` (with ``scales``): the samples at w = 0 and 1 regress on ``net``'s output (:class:`RefitModule`)."""
    if len(samples) < batch_size:
        raise ConfigError(f"--num {len(samples)} samples is fewer than one batch (--batch-size {batch_size})")
    pl.seed_everything(seed, verbose=False)
    module = refit_module(net, process, lr, scales, anchored)
    order = torch.Generator().manual_seed(seed)
    columns = (samples, labels) if scales is None else (samples, labels, scales)
    data = DataLoader(TensorDataset(*columns), batch_size, shuffle=True, drop_last=True, generator=order)
    ema = EMA([REFIT_EMA])
    trainer = pl.Trainer(
        max_steps=updates,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ema],
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    return trainer, ema


def refit_module(net: nn.Module, process: Process, lr: float, scales: Tensor | None, anchored: bool) -> MatchingModule:
    """The module :func:`fine_tune` trains: a copy of ``net`` (with a w input on the range of ``scales``) in train
    mode, its matching loss anchored on ``net`` at w = 0 and 1 of ``scales`` (:class:`RefitModule`) or plain."""
    copied = copy.deepcopy(net)
    if scales is not None:
        copied = ScaleConditioned(copied, float(scales.min()), float(scales.max()))
    copied.train().requires_grad_(True)
    if anchored and scales is not None:
        return RefitModule(copied, process, net, lr)
    return MatchingModule(copied, process, lr=lr, warmup_steps=100)


def teacher_checkpoint(trainer: pl.Trainer, ema: EMA) -> dict[str, Any]:
    """The fine-tuned teacher in the form of the shipped teachers (:func:`weights_checkpoint`): its EMA-0.999 weights
    as the network's weights, hyperparameters and run record, no optimiser state (load it with teacher_ema: null)."""
    module = trainer.lightning_module
    weights = {k: v.detach().cpu().clone() for k, v in pick_decay(ema.averages, REFIT_EMA, "the refit's EMA").items()}
    check_finite_state(weights)  # a diverged fine-tune is a one-line error, never a written teacher
    record = dataclasses.replace(module.run_record(), weights=f"ema {REFIT_EMA}")
    return weights_checkpoint(record, dict(module.hparams), weights, trainer.global_step, pl.__version__)


def guided_samples(
    sampler: Sampler, scales: list[float], num: int, seed: int, batch_size: int, device: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(samples, labels, w) of the teacher: ``num`` samples at each guidance scale of ``scales`` (the k-th scale's
    noise from ``seed`` + k), labels 0 … C − 1 in turn at each."""
    samples = [sampler.guided(w).draw(num, seed + k, batch_size, device) for k, w in enumerate(scales)]
    labels = cycled_labels(0, num, class_count(sampler.net)).repeat(len(scales))  # the classes draw() conditioned on
    return torch.cat(samples), labels, torch.tensor(scales).repeat_interleave(num)


def refit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realuid refit",
        description="Fine-tune a class-conditional teacher on its own samples at guidance scale w: the teacher "
        "checkpoint written samples unguided what the teacher samples at w, and distils unguided into a student "
        "that does too. With --guidance-range, on samples at several w, into a teacher that reads w as an input.",
    )
    add_network_options(p)
    scale = p.add_mutually_exclusive_group(required=True)
    scale.add_argument("--guidance", type=float, help="the guidance scale w of the samples")
    scale.add_argument("--guidance-range", type=float, nargs=2, metavar=("W_MIN", "W_MAX"), help=RANGE_HELP)
    p.add_argument("--points", type=int, default=4, help="--guidance-range: how many evenly spaced w (default 4)")
    p.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=True, help=ANCHOR_HELP)
    p.add_argument("--num", type=int, default=4000, help="guided samples at each w, the classes 0 … C−1 in turn")
    p.add_argument("--updates", type=int, default=2000, help="fine-tuning updates")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="draws the samples' noise and the batches' order")
    p.add_argument("--out", required=True, help="the teacher checkpoint to write (.ckpt)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def sample_scales(args: argparse.Namespace) -> list[float]:
    """The w of the samples: ``--guidance``, or ``--points`` evenly spaced w on ``--guidance-range``; one-line errors
    for a bad range or too few points."""
    if args.guidance_range is None:
        return [args.guidance]
    check_range(args.guidance_range)
    if args.points < 2:
        raise ConfigError(f"--points {args.points} must be at least 2 (the range's ends)")
    return range_scales(args.guidance_range, args.points)


def refit_command(argv: list[str]) -> None:
    args = refit_parser().parse_args(argv)
    if args.num < 1 or args.updates < 1 or args.lr <= 0:
        raise ConfigError(f"--num {args.num}, --updates {args.updates} and --lr {args.lr} must be positive")
    scales, ranged = sample_scales(args), args.guidance_range is not None
    check_writable([("--out", Path(args.out).parent)])
    sampler = load_sampler(args.ckpt, args.ema, args.steps, args.method)
    if sampler.student:
        raise ConfigError(f"--ckpt {args.ckpt!r} is a student; realuid refit fine-tunes a teacher")
    if isinstance(sampler.net, ScaleConditioned):
        raise ConfigError(f"--ckpt {args.ckpt!r} was refit on a range of w already; refit the teacher it came from")
    samples, labels, w = guided_samples(  # a network without a trained null class: one line, before any sampling
        sampler, scales, args.num, args.seed, args.batch_size, args.device
    )
    accelerator = "cpu" if torch.device(args.device).type == "cpu" else "gpu"
    training = (args.updates, args.lr, args.seed, args.batch_size, accelerator)
    fitted = (sampler.net, sampler.process, samples, labels, *training)
    trainer, ema = fine_tune(*fitted, scales=w if ranged else None, anchored=args.anchor)
    save_atomic(teacher_checkpoint(trainer, ema), args.out)
    where = f"w in [{scales[0]:g}, {scales[-1]:g}] ({len(scales)} values)" if ranged else f"w = {scales[0]:g}"
    then = NEXT_STEPS[ranged]
    print(
        f"wrote teacher checkpoint {args.out}: {args.updates} updates on {len(samples)} samples at {where}; "
        f"sample it {then}"
    )
