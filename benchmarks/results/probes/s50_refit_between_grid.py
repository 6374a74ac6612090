"""Does a teacher refit on a grid of w reproduce the guided teacher between the grid's points (stop 50)? At each w:
FD-digits of the refit's samples to the guided teacher's (noise seeds 3 and 1), the floor of that distance (the
teacher's two noises) and both models' FD-digits to the 1 797 real digits; NUM samples, STEPS Euler steps, labels 0 … 9.
    OMP_NUM_THREADS=1 python benchmarks/results/probes/s50_refit_between_grid.py REFIT.ckpt OUT.json 1.1,1.5 1000 50
Each w prints a JSON line as it is done; OUT is written at the end."""

import json
import sys
import time

import torch

from realuid_lightning import DigitsDataModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.metrics import feature_frechet_distance
from realuid_lightning.nets import DigitsFeatures
from realuid_lightning.nets.guidance import Guided
from realuid_lightning.nets.labels import cycled_labels
from realuid_lightning.sampling import sample_teacher

refit_path, out = sys.argv[1], sys.argv[2]
scales = [float(s) for s in sys.argv[3].split(",")]
num, steps = int(sys.argv[4]), int(sys.argv[5])
teacher, process, rec = network_from_checkpoint(load_checkpoint("checkpoints/digits_teacher_cond.ckpt"), None)
refit, _, _ = network_from_checkpoint(load_checkpoint(refit_path), None)
feats, real = DigitsFeatures.pretrained(), DigitsDataModule().real_images()
labels = cycled_labels(0, num, 10)
z = [torch.randn(num, *rec.data_shape, generator=torch.Generator().manual_seed(s)) for s in (1, 3)]
rows = []
with torch.no_grad():
    for w in scales:
        t0 = time.time()
        a = sample_teacher(Guided(teacher, w), process, z[0], steps, cond=labels)
        b = sample_teacher(Guided(teacher, w), process, z[1], steps, cond=labels)
        r = sample_teacher(Guided(refit, w), process, z[1], steps, cond=labels)
        row = {
            "w": w,
            "floor": feature_frechet_distance(b, a, feats),
            "refit_to_teacher": feature_frechet_distance(r, a, feats),
            "teacher_fd": feature_frechet_distance(a, real, feats),
            "refit_fd": feature_frechet_distance(r, real, feats),
            "s": round(time.time() - t0),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
with open(out, "w") as f:
    json.dump(rows, f)
