"""Does a second read help a trained one-step student? For each default-job checkpoint (EMA 0.9): FD-digits of its
one-step samples, and of those samples re-noised to time s (x_s = s·x̂1 + (1 − s)·z', fresh z') and read once more by
(a) the student's own network at s (its 2-step sampler on the schedule [t_G, s], never trained at s) and (b) the
teacher. 10 000 samples per noise draw, draws 0, 1, 2 (re-noising seeds 10, 11, 12), against the 1 797 real digits.

    OMP_NUM_THREADS=1 python benchmarks/results/probes/second_read/second_read.py CKPT [CKPT ...] --times 0.7 0.85
"""

import argparse
import json

import torch

from realuid_lightning import DigitsDataModule, FewStepGenerator
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets.features import DigitsFeatures
from realuid_lightning.sampler import load_sampler

parser = argparse.ArgumentParser()
parser.add_argument("ckpts", nargs="+")
parser.add_argument("--times", nargs="+", type=float, default=[0.7, 0.85])
parser.add_argument("--teacher", default="checkpoints/digits_teacher.ckpt")
parser.add_argument("--num", type=int, default=10000)
args = parser.parse_args()
torch.set_num_threads(1)
real, features = DigitsDataModule(source="sklearn").real_images(), DigitsFeatures.pretrained()
teacher, process, _ = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
for ckpt in args.ckpts:
    sampler = load_sampler(ckpt, 0.9, None, None)
    readers = {
        "student": FewStepGenerator(sampler.net, process, [[sampler.time]]),
        "teacher": FewStepGenerator(teacher, process, [[0.0]]),
    }
    row = {"ckpt": ckpt, "t_G": sampler.time}
    for draw in range(3):
        z = torch.randn(args.num, *sampler.shape, generator=torch.Generator().manual_seed(draw))
        with torch.no_grad():
            x1 = sampler(z)
            row.setdefault("1-step", []).append(feature_frechet_distance(x1, real, features))
            for s in args.times:
                t = torch.full((args.num,), s)
                for name, reader in readers.items():
                    z2 = torch.randn(z.shape, generator=torch.Generator().manual_seed(10 + draw))
                    x = reader.read(reader.renoise(x1, t, z2), t)
                    row.setdefault(f"{name} read at {s}", []).append(feature_frechet_distance(x, real, features))
    rounded = {k: [round(v, 3) for v in vals] if isinstance(vals, list) else vals for k, vals in row.items()}
    print(json.dumps(rounded), flush=True)
