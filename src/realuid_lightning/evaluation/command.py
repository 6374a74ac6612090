"""``realuid evaluate``: score a checkpoint's samples against a reference, repeated over seeds.

FD (FID with Inception features), KID, precision / recall, where held-out images exist memorisation, and where the
samples are class-conditional and φ classifies their classes (FD-digits, FD-mnist) class accuracy; a markdown table on
stdout, then one JSON line ``{"protocol": {...}, "metrics": {name: {"mean", "std", "values"}}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.evaluation.images import write_pngs
from realuid_lightning.evaluation.reference import (
    SPLITS,
    ReferenceStats,
    folder_reference,
    load_datamodule,
    load_stats,
    real_batches,
)
from realuid_lightning.evaluation.scores import (
    FeatureDistances,
    class_accuracy,
    classifies,
    fd_label,
    fingerprint,
    image_features,
)
from realuid_lightning.metrics import memorisation, precision_recall
from realuid_lightning.nets.features import PRETRAINED_FEATURES, feature_network
from realuid_lightning.nets.labels import class_count
from realuid_lightning.sampler import Sampler
from realuid_lightning.sampler_options import add_sampler_options, sampler_from_args

LABELS = {
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
    "memorisation": "memorisation (d_samples / d_heldout)",
    "nn_distance_samples": "d_samples (to the nearest training image)",
    "nn_distance_heldout": "d_heldout (to the nearest training image)",
    "accuracy": "class accuracy (φ's classifier)",
}


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realuid evaluate",
        description="Score a teacher or distillation checkpoint: "
        "FD / FID, KID, precision / recall, memorisation against real images and (class-conditional samples, "
        "FD-digits / FD-mnist) class accuracy, as mean ± std over seeds.",
    )
    add_sampler_options(p)
    _add_reference_options(p)
    _add_run_options(p)
    return p


def _add_reference_options(p: argparse.ArgumentParser) -> None:
    """What the samples are scored against: the features φ and the reference images or statistics."""
    p.add_argument(
        "--feature",
        default=None,
        help="φ: 'inception' (FID), 'digits' or 'mnist' (FD-digits, FD-mnist) or the "
        "class_path of an nn.Module with num_features (default: the --stats file's, else inception)",
    )
    p.add_argument(
        "--inception-weights", default=None, help="a local torch-fidelity Inception weights file (docs/fid.md)"
    )
    p.add_argument("--reference", default=None, help="'data' (the real images of --data) or an image folder")
    p.add_argument("--data", default=None, help="with --reference data: a LightningCLI config (its data section)")
    p.add_argument("--split", choices=SPLITS, default="train", help="with --reference data: the data module's split")
    p.add_argument("--stats", default=None, help="a reference statistics file (.npz) written by --save-stats")
    p.add_argument("--save-stats", default=None, help="write the reference's statistics to this .npz file")
    p.add_argument("--num-real", type=int, default=None, help="at most this many reference images (default: all)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """How much is drawn and scored, with which seeds, and where."""
    p.add_argument("--num", type=int, default=10000, help="samples per repeat (default: 10000)")
    p.add_argument("--repeats", type=int, default=1, help="repeats; repeat r samples with seed --seed + r")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3, help="k of the k-NN radii of precision / recall")
    p.add_argument(
        "--kid-subset", type=int, default=1000, help="KID subset size (at most the sample and reference counts)"
    )
    p.add_argument(
        "--save-images", default=None, help="write the samples as PNGs here (in DIR/seed_S/ for each repeat when R > 1)"
    )
    p.add_argument(
        "--chain",
        action="store_true",
        help="a one- or few-step student: score its data estimate after each of its network reads (its steps, then "
        "any --teacher-reads) as well as the sample, on the same draws",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for values the parser cannot check."""
    for name, least in (("num", max(2, args.k + 1)), ("repeats", 1), ("k", 1), ("kid_subset", 2), ("batch_size", 1)):
        if getattr(args, name) < least:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid; it must be >= {least}")
    if args.num_real is not None and args.num_real <= args.k:
        raise ConfigError(f"--num-real {args.num_real} is invalid; it must be > --k {args.k}")
    if (args.stats is None) == (args.reference is None):
        raise ConfigError(
            "give the reference as --reference data (with --data CONFIG), --reference DIR (an image "
            "folder) or --stats FILE.npz: exactly one of --reference and --stats"
        )
    if args.reference is not None and args.reference != "data" and not Path(args.reference).is_dir():
        raise ConfigError(f"--reference {args.reference!r} is neither 'data' nor an image folder")
    if (args.reference == "data") != (args.data is not None):
        raise ConfigError(
            "--reference data and --data CONFIG go together: --data names the config whose data module is read"
        )


def build_reference(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[ReferenceStats, nn.Module]:
    """The reference statistics and the feature network φ they were (or are now) computed with."""
    stats = None if args.stats is None else load_stats(args.stats)
    feature = args.feature or (stats.feature if stats is not None else "inception")
    extractor = feature_network(feature, args.inception_weights).to(args.device)
    key = fingerprint(extractor)
    if stats is not None:
        if stats.feature != feature or stats.fingerprint != key:
            raise ConfigError(
                f"--stats {args.stats!r} was computed with feature {stats.feature!r} (weights "
                f"{stats.fingerprint[:12]}), not {feature!r} (weights {key[:12]}); recompute it with "
                "--save-stats"
            )
        return stats, extractor
    if args.reference != "data":
        batches = folder_reference(args.reference, shape, args.num_real, args.batch_size)
        protocol = {"source": "folder", "folder": args.reference}
        return ReferenceStats.from_batches(batches, extractor, feature, key, protocol), extractor
    datamodule = load_datamodule(args.data)
    datamodule.setup("fit")
    heldout = None
    if args.split == "train" and hasattr(datamodule, "heldout_images") and len(datamodule.heldout_images(2)):
        heldout = real_batches(datamodule, None, args.batch_size, "heldout")
    protocol = {"source": "data", "data": args.data, "datamodule": type(datamodule).__name__, "split": args.split}
    batches = real_batches(datamodule, args.num_real, args.batch_size, args.split)
    return ReferenceStats.from_batches(batches, extractor, feature, key, protocol, heldout), extractor


def score(
    samples: Tensor,
    extractor: nn.Module,
    reference: ReferenceStats,
    args: argparse.Namespace,
    seed: int,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """FD, KID, precision / recall (against as many reference features as samples, a random subset drawn with
    ``seed``), with held-out features memorisation, and with ``labels`` (the class each sample was drawn for) the
    share that φ's classifier assigns to it, of one set of samples."""
    fake = torch.cat([image_features(extractor, x) for x in samples.split(args.batch_size)])
    real = reference.features.to(fake.device)
    distances = FeatureDistances(extractor.num_features, kid=True).to(fake.device)
    distances.load_real({**reference.state, "real_features": real})
    distances.update(fake, real=False)
    scores = distances.compute(seed, subset_size=min(args.kid_subset, len(fake), len(real)))
    subset = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[: len(fake)].to(real.device)
    scores["precision"], scores["recall"] = precision_recall(real[subset], fake, args.k)
    if reference.heldout is not None:
        mem = memorisation(real, fake, reference.heldout.to(fake.device))
        scores |= dict(zip(("nn_distance_samples", "nn_distance_heldout", "memorisation"), mem))
    if labels is not None:
        scores["accuracy"] = class_accuracy(extractor, samples, labels, args.batch_size)
    return scores


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """{metric: {'mean', 'std' (over repeats, ddof = 1; None for one repeat), 'values'}}."""
    return {
        name: {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values,
        }
        for name, values in ((n, [run[n] for run in runs]) for n in runs[0])
    }


def fd_name(feature: str) -> str:
    """The FD's name for ``feature``: FID, FD-digits, FD-mnist, else FD (class path)."""
    return fd_label(feature) if feature == "inception" or feature in PRETRAINED_FEATURES else f"FD ({feature})"


def table(metrics: dict[str, dict[str, Any]], feature: str) -> str:
    """A markdown table: metric, mean ± std, the value of each repeat."""
    fd = fd_name(feature)
    rows = ["| metric | mean ± std | per repeat |", "|---|---|---|"]
    for name, m in metrics.items():
        rows.append(f"| {fd if name == 'fd' else LABELS.get(name, name)} | {summary_cells(m)} |")
    return "\n".join(rows)


def summary_cells(m: dict[str, Any]) -> str:
    """One metric's table cells: 'mean ± std | value of each repeat' (no ± for one repeat)."""
    spread = "" if m["std"] is None else f" ± {m['std']:.4g}"
    return f"{m['mean']:.4g}{spread} | {', '.join(f'{v:.4g}' for v in m['values'])}"


def chain_table(chain: list[dict[str, Any]], feature: str) -> str:
    """A markdown table of --chain: each network read, its time and the FD of the estimate after it."""
    fd = fd_name(feature)
    rows = [f"| after read | t | {fd} mean ± std | per repeat |", "|---|---|---|---|"]
    for read in chain:
        rows.append(f"| {read['read']} | {read['time']:g} | {summary_cells(read['metrics']['fd'])} |")
    return "\n".join(rows)


def evaluate_command(argv: list[str]) -> None:
    args = evaluate_parser().parse_args(argv)
    check_args(args)
    sampler = sampler_from_args(args)
    times = sampler.read_times() if args.chain else []  # a teacher: a one-line error before the reference is read
    reference, extractor = build_reference(args, sampler.shape)
    if args.save_stats:
        print(f"wrote the reference statistics to {reference.save(args.save_stats)}", file=sys.stderr)
    check_reference(reference, sampler.shape, args.k)
    runs = [
        draw_and_score(sampler, extractor, reference, args, seed) for seed in range(args.seed, args.seed + args.repeats)
    ]
    metrics = summarise([reads[-1] for reads in runs])
    print(table(metrics, reference.feature))
    record = {"protocol": evaluation_protocol(args, sampler, reference), "metrics": metrics}
    if args.chain:
        record["chain"] = [
            {"read": k + 1, "time": t, "metrics": summarise([r[k] for r in runs])} for k, t in enumerate(times)
        ]
        print(chain_table(record["chain"], reference.feature))
    print(json.dumps(record))


def draw_and_score(
    sampler: Sampler, extractor: nn.Module, reference: ReferenceStats, args: argparse.Namespace, seed: int
) -> list[dict[str, float]]:
    """The scores of one repeat's samples (with --chain: of the estimate after each network read, the samples
    last), written as PNGs with --save-images; class accuracy where φ classifies the classes they were drawn for."""
    drawn = sampler.draw(args.num, seed, args.batch_size, args.device, chain=args.chain)
    labels = sampler.labels(args.num) if classifies(extractor, class_count(sampler.net)) else None
    reads = drawn if args.chain else drawn[None]  # (reads, num, *shape), the samples last
    if args.save_images:
        folder = write_pngs(reads[-1], Path(args.save_images) / (f"seed_{seed}" if args.repeats > 1 else ""))
        print(f"wrote {len(reads[-1])} PNG files to {folder}", file=sys.stderr)
    return [score(x, extractor, reference, args, seed, labels) for x in reads]


def check_reference(reference: ReferenceStats, shape: tuple[int, ...], k: int) -> None:
    """One line when the reference images are not of the samples' ``shape`` or too few for k-NN radii."""
    source, num_real = reference.protocol.get("source"), len(reference.features)
    if tuple(reference.shape) != shape:
        raise ConfigError(
            f"the samples have shape {shape} but the reference images ({source}) have shape "
            f"{tuple(reference.shape)}; give a reference of the checkpoint's data shape"
        )
    if num_real <= k:
        raise ConfigError(f"the reference holds {num_real} images; precision / recall need more than --k {k}")


def evaluation_protocol(args: argparse.Namespace, sampler: Sampler, reference: ReferenceStats) -> dict[str, Any]:
    """What was scored, how, and against what: the ``protocol`` of the JSON line."""
    num_real = len(reference.features)
    return {
        "ckpt": args.ckpt,
        **sampler.protocol(),
        "sources": args.sources,
        "features": reference.feature,
        "feature_weights": reference.fingerprint[:16],
        "num": args.num,
        "repeats": args.repeats,
        "seeds": list(range(args.seed, args.seed + args.repeats)),
        "reference": reference.protocol,
        "k": args.k,
        "pr_real": min(args.num, num_real),
        "kid_subset": min(args.kid_subset, args.num, num_real),
    }
