"""Shrink a teacher checkpoint for shipping: keep its metadata and one set of weights, drop optimiser state.

    python scripts/slim_checkpoint.py runs/digits_teacher/checkpoints/last.ckpt checkpoints/digits_teacher.ckpt --ema 0.999

With --ema D the EMA-D weights become the checkpoint's weights (load it with teacher_ema: null). The
output is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from realuid_lightning.checkpoint import ema_averages, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--ema", type=float, default=None, help="EMA decay whose weights to keep (default: the raw weights)")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.source)
    prefix = ckpt["realuid"]["network_prefix"]
    if args.ema is None:
        weights = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix + ".")}
    else:
        weights = {f"{prefix}.{k}": v for k, v in ema_averages(ckpt)[str(args.ema)].items()}
    slim = {"realuid": {**ckpt["realuid"], "weights": f"ema {args.ema}" if args.ema else "raw"},
            "hyper_parameters": ckpt["hyper_parameters"], "state_dict": weights,
            "global_step": ckpt.get("global_step"), "pytorch-lightning_version": ckpt.get("pytorch-lightning_version")}
    target = Path(args.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    torch.save(slim, tmp)
    os.replace(tmp, target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB, step {slim['global_step']}, weights: {slim['realuid']['weights']})")


if __name__ == "__main__":
    main()
