"""Shrink a teacher checkpoint for shipping: keep its metadata and one set of weights, drop optimiser state.

    python scripts/slim_checkpoint.py runs/digits_teacher/checkpoints/last.ckpt checkpoints/digits_teacher.ckpt \
        --ema 0.999

With --ema D the EMA-D weights become the checkpoint's weights (load it with teacher_ema: null). The
output is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from realuid_lightning.checkpoint import load_checkpoint, sub_state, weights_checkpoint
from realuid_lightning.run_record import EMAState, RunMetadata
from realuid_lightning.saving import save_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument(
        "--ema", type=float, default=None, help="EMA decay whose weights to keep (default: the raw weights)"
    )
    args = parser.parse_args()
    ckpt = load_checkpoint(args.source)
    record = RunMetadata.read(ckpt, args.source)
    if args.ema is None:
        weights = sub_state(ckpt["state_dict"], record.network_prefix)
    else:
        weights = EMAState.read(ckpt).weights(args.ema, args.source)
    record = replace(record, weights=f"ema {args.ema}" if args.ema else "raw")
    hparams, step, version = RunMetadata.init_args(ckpt), ckpt.get("global_step"), ckpt.get("pytorch-lightning_version")
    slim = weights_checkpoint(record, hparams, weights, step, version)
    save_atomic(slim, args.target)
    target = Path(args.target)
    print(
        f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB, step {slim['global_step']}, weights: "
        f"{slim['realuid']['weights']})"
    )


if __name__ == "__main__":
    main()
