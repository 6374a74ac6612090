"""The teacher's UNet alone (stop 50): forward + backward of out.square().mean() at batch 64 of 1x8x8, one thread,
under oneDNN on / off, flushed denormals and channels_last, then torch.profiler's top ops.
    OMP_NUM_THREADS=1 python benchmarks/results/profile_digits_avx2_unet.py"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint

torch.set_num_threads(1)
net, _, _ = network_from_checkpoint(load_checkpoint("checkpoints/digits_teacher.ckpt"), ema=None)
x, t = torch.randn(64, 1, 8, 8), torch.rand(64)


def bench(label: str, x: torch.Tensor, n: int = 30) -> None:
    for _ in range(5):
        net(t, x).square().mean().backward()
    start = time.perf_counter()
    for _ in range(n):
        net(t, x).square().mean().backward()
    both = (time.perf_counter() - start) / n * 1e3
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(n):
            net(t, x)
    print(f"{label}: fwd+bwd {both:.1f} ms, fwd {(time.perf_counter() - start) / n * 1e3:.1f} ms", flush=True)


bench("default", x)
torch.backends.mkldnn.enabled = False
bench("mkldnn off", x)
torch.backends.mkldnn.enabled = True
torch.set_flush_denormal(True)
bench("flush denormal", x)
torch.set_flush_denormal(False)
net.to(memory_format=torch.channels_last)
bench("channels_last", x.to(memory_format=torch.channels_last))
net.to(memory_format=torch.contiguous_format)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10):
        net(t, x).square().mean().backward()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
