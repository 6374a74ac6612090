"""The record of a probe (2026-12-03): FD-digits of the teacher-initialised one-step generator G(z) =
to_data(f*(t_G, (1 − t_G)·z)) before any training, at several start times t_G, on the convergence study's noise
(2 000 samples, seed 1) against the 1 797 digits (README 'Where the generator starts').

    OMP_NUM_THREADS=1 python benchmarks/results/probes/tg_initial_fd.py

Prints t_G, the FD and the samples' std per line.
"""

import torch

from realuid_lightning import DigitsDataModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets.features import DigitsFeatures


def main() -> None:
    net, process, record = network_from_checkpoint(
        load_checkpoint("checkpoints/digits_teacher.ckpt"), ema=None, what=""
    )
    data = DigitsDataModule(source="sklearn", batch_size=64)
    data.setup("fit")
    noise = torch.randn(2000, *record.data_shape, generator=torch.Generator().manual_seed(1))
    features = DigitsFeatures.pretrained()
    for time in (0.0, 0.1, 0.2, 0.2857, 0.4, 0.5):
        with torch.no_grad():
            x = OneStepGenerator(net, process, time)(noise)
        print(time, round(feature_frechet_distance(x, data.real_images(), features), 2), round(x.std().item(), 3))


if __name__ == "__main__":
    main()
