"""Where along its chain does a few-step student's sample get better or worse? For each checkpoint (EMA 0.9 by
default): FD-digits of the data estimate x̂1 after each step 1 … M of its M-step sample, for the noise draws 0, 1, 2
of `realuid evaluate --num 10000 --repeats 3` (the same z and re-noising, so the last step's figures are that command's
to the digit), against the 1 797 real digits. One JSON line per checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/results/probes/chain/chain_fd.py CKPT [CKPT ...] --steps 4
"""

import argparse
import json

import torch

from realuid_lightning.evaluation.command import build_reference, evaluate_parser, score
from realuid_lightning.sampler import load_sampler

parser = argparse.ArgumentParser()
parser.add_argument("ckpts", nargs="+")
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--ema", type=float, default=0.9)
parser.add_argument("--num", type=int, default=10000)
args = parser.parse_args()
torch.set_num_threads(1)
protocol = evaluate_parser().parse_args(
    ["--ckpt", args.ckpts[0], "--feature", "digits", "--reference", "data", "--data", "configs/digits_realuid.yaml"]
)
reference, extractor = None, None
for ckpt in args.ckpts:
    sampler = load_sampler(ckpt, args.ema, args.steps)
    if reference is None:
        reference, extractor = build_reference(protocol, sampler.shape)
    student, fd = sampler.student_generator(), {}
    for seed in range(3):  # Sampler.draw's batches and generator, keeping every step's estimate
        generator, chunks = torch.Generator().manual_seed(seed), []
        with torch.no_grad():
            for start in range(0, args.num, protocol.batch_size):
                z = torch.randn((min(protocol.batch_size, args.num - start), *sampler.shape), generator=generator)
                chunks.append(student.estimates(z, None, args.steps, generator))
        for k in range(args.steps):
            samples = torch.cat([chunk[k] for chunk in chunks])
            fd.setdefault(k + 1, []).append(score(samples, extractor, reference, protocol, seed)["fd"])
    for k, values in fd.items():
        v = torch.tensor(values)
        print(
            f"{ckpt}: after step {k} (t = {student.schedule(args.steps)[k - 1]}) FD-digits {v.mean():.2f} ± "
            f"{v.std():.2f}  ({', '.join(f'{x:.2f}' for x in values)})"
        )
    print(json.dumps({"ckpt": ckpt, "steps": args.steps, "ema": args.ema, "num": args.num, "fd_after_step": fd}))
