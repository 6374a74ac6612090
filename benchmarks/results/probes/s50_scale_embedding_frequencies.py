"""How fast does a fake model built by the constructor learn the w input? Train ScaleConditioned(fresh UNet) on the
guided teacher's samples at w = 1 and w = 4 (flow matching loss), then compare its loss at the right w with its loss
at the swapped w (same t, noise): the gap is what it has learnt of w. Variants of the w embedding (stop 50): base
(omega_k = 2^k, k = 0 ... 7, as shipped), low (omega / 8), randinit (e(w)'s last layer not zero). Samples: 1 000 at each
of w = 1, 4 (100 Euler steps, noise seeds 10, 11), cached beside OUT as s50_w14_samples.pt.
    OMP_NUM_THREADS=1 python benchmarks/results/probes/s50_scale_embedding_frequencies.py base 2000 OUT.json"""

import json
import sys
import time
from pathlib import Path

import torch

from realuid_lightning.checkpoint import RunMetadata, instantiate, load_checkpoint, network_from_checkpoint
from realuid_lightning.nets.guidance import Guided, ScaleConditioned
from realuid_lightning.nets.labels import cycled_labels
from realuid_lightning.sampling import sample_teacher

variant, updates, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ck = load_checkpoint("checkpoints/digits_teacher_cond.ckpt")
teacher, process, rec = network_from_checkpoint(ck, None)
data_file = Path(out).parent / "s50_w14_samples.pt"  # stop 50 kept it in its run folder, /work/runs/s50
try:
    x1, c, w = torch.load(data_file)
except FileNotFoundError:
    num = 1000
    labels = cycled_labels(0, num, 10)
    xs = []
    with torch.no_grad():
        for k, s in enumerate((1.0, 4.0)):
            z = torch.randn(num, *rec.data_shape, generator=torch.Generator().manual_seed(10 + k))
            xs.append(sample_teacher(Guided(teacher, s), process, z, 100, cond=labels))
    x1, c, w = torch.cat(xs), labels.repeat(2), torch.tensor([1.0, 4.0]).repeat_interleave(num)
    torch.save((x1, c, w), data_file)
torch.manual_seed(0)
net = instantiate(RunMetadata.read(ck, "t").net)
net = ScaleConditioned(net, 1.0, 4.0)
emb = net.embedding.scale
if variant == "low":  # omega_k = 2^k / 8: 1/8 ... 16
    emb.omega = emb.omega / 8
elif variant == "randinit":
    torch.nn.init.normal_(emb.layers[-1].weight, std=0.02)
opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.0, 0.999))
g = torch.Generator().manual_seed(1)


def loss_at(xb, cb, wb, t, z):
    xt = t[:, None, None, None] * xb + (1 - t[:, None, None, None]) * z
    return (net(t, xt, cb, wb) - (xb - z)).square().flatten(1).mean(1)


ev = torch.randperm(len(x1), generator=torch.Generator().manual_seed(2))[:512]
te = torch.rand(512, generator=torch.Generator().manual_seed(3))
ze = torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(4))
rows = []
t0 = time.time()
for step in range(updates + 1):
    if step % 250 == 0:
        with torch.no_grad():
            right = loss_at(x1[ev], c[ev], w[ev], te, ze).mean().item()
            swapped = loss_at(x1[ev], c[ev], 5.0 - w[ev], te, ze).mean().item()
        rows.append(
            {"step": step, "right": right, "swapped": swapped, "gap": swapped - right, "s": round(time.time() - t0)}
        )
        print(json.dumps(rows[-1]), flush=True)
    if step == updates:
        break
    i = torch.randint(0, len(x1), (64,), generator=g)
    t = torch.rand(64, generator=g)
    z = torch.randn(64, 1, 8, 8, generator=g)
    loss = loss_at(x1[i], c[i], w[i], t, z).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
with open(out, "w") as f:
    json.dump(rows, f)
