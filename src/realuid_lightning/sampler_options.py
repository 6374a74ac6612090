"""The command-line options that describe a sampler (``realuid sample`` and ``evaluate``; ``refit`` takes the network
options): the checkpoint, its weights and solver, the class, sources, guidance scale and teacher reads, and the
:class:`~realuid_lightning.sampler.Sampler` they give."""

from __future__ import annotations

import argparse

from realuid_lightning.sampler import Sampler, load_sampler
from realuid_lightning.sampling import COUPLING_SOLVERS
from realuid_lightning.teacher_reads import add_teacher_read_options


def sampler_from_args(args: argparse.Namespace) -> Sampler:
    """The sampler the options of :func:`add_sampler_options` describe."""
    sampler = load_sampler(args.ckpt, args.ema, args.steps, args.method)
    return sampler.conditioned(args.label, args.sources, args.guidance).read_by_teacher(
        args.teacher_reads, args.teacher
    )


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    """The options of :func:`load_sampler` and :meth:`Sampler.conditioned`, shared by ``realuid sample`` and
    ``realuid evaluate``: the checkpoint, its weights, solver, class, sources and guidance scale."""
    add_network_options(p)
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale w: a teacher trained with cond_drop_prob samples "
        "f(∅) + w·(f(c) − f(∅)); a student distilled with guidance_range takes w (default: unguided / the range's "
        "middle)",
    )
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class-conditional checkpoints: this class only (default: the classes 0 … C−1 in turn)",
    )
    p.add_argument(
        "--sources",
        default=None,
        help="bridge / interpolant checkpoints: the sources x0, as a tensor file (.pt, "
        "(N, *data shape), in the data's range) or a folder of images (resized and centre-cropped to the data shape, "
        "in [-1, 1]), degraded as in training (e.g. by PairedDataModule.degrade); sample i uses source i mod N",
    )
    add_teacher_read_options(p)


def add_network_options(p: argparse.ArgumentParser) -> None:
    """The checkpoint, and the weights and solver it samples with."""
    p.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint written by realuid fit (teacher or student), a diffusers "
        "teacher folder or hub id, or a pipeline folder written by realuid export",
    )
    p.add_argument(
        "--ema",
        default="auto",
        help="EMA decay of a student, 'raw' for the raw weights, 'auto' (default) for 0.999 or the first decay saved",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="ODE steps for a teacher (default: its sample_steps), or one of a few-step student's trained step counts "
        "(default: the most)",
    )
    p.add_argument(
        "--method",
        choices=COUPLING_SOLVERS,
        default=None,
        help="solver for a teacher: euler / heun (ODE), or sde (Euler–Maruyama) for a bridge / interpolant teacher "
        "(default: its sample_method)",
    )
