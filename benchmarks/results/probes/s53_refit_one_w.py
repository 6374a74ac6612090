"""Stop 53: write the single-w refit teacher of benchmarks/guidance.py's ``refit2`` / ``refit4`` recipe at w = W
(4 000 samples of the teacher at W, 100 Euler steps, noise seed 4; UPDATES Adam updates of batch 128 at lr 1e-4,
training seed SEED; its EMA-0.999 weights) to OUT, for ``benchmarks/guidance.py --scale-teachers W=OUT``:
``OMP_NUM_THREADS=1 python benchmarks/results/probes/s53_refit_one_w.py W UPDATES SEED OUT`` (from the repository
root; stop 53: W = 2, 3, 4 with UPDATES = 2000, 4000, 4000, SEED = 0, 1 145 / 1 892 / 1 860 s at one thread).
``realuid refit --guidance W`` writes the same kind of teacher (its noise from --seed)."""

import logging
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
import guidance  # noqa: E402

from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402

w, updates, seed, out = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sys.argv = [sys.argv[0], "--refit-steps", str(updates), "--seed", str(seed), "--refit-out", out]
args = guidance.arguments()  # the benchmark's refit defaults: 4 000 samples, lr 1e-4, 100 teacher steps
warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
net, process, record = network_from_checkpoint(load_checkpoint(args.teacher), ema=None, what=args.teacher)
args.data_shape = record.data_shape
start = time.perf_counter()
guidance.refit_teacher(net, process, w, args)
print(f"refit w={w:g} updates={updates} seed={seed} -> {out}: {time.perf_counter() - start:.0f} s", flush=True)
