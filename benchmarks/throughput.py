"""Throughput of RealUID distillation: a plain PyTorch loop vs RealUIDModule (fp32)
vs RealUIDModule (bf16 + channels_last, without and with compile).

    python benchmarks/throughput.py                                  # CPU: a small UNet, one thread
    python benchmarks/throughput.py --device cuda --batch 256        # GPU: the paper's CIFAR-10 UNet (35.7M)
    python benchmarks/throughput.py --device cuda --settings c0 c    # only the bf16 settings (no scaling table)

(a) is the official recipe as a hand-written PyTorch loop (fp32, one process): the fake model runs on the generated
and the real batch in two forward passes; in a generator update the fake model's stray gradients are computed and
discarded. (b) is RealUIDModule through a Lightning Trainer in fp32; (c0) adds precision='bf16-mixed',
channels_last, teacher_bf16 and fused Adam where available (CUDA); (c) adds compile to (c0). All: the same network,
batch, α = 0.94, β = 0.9588 (the real batch is used), K = 5, Adam (0, 0.999), warm-up, clipping at 1 and EMA (0.999,
0.9996, 0.9999). Reports images/s and peak memory per update type and the K:1 average (the median of the
measured updates; on CUDA peak allocated memory, on a CPU the peak of the memory allocated during the update, from
the profiler, on top of weights and Adam states), the seconds of the warm-up cycle (compilation included), the
ratios, the fp32-vs-bf16 loss agreement on a fixed batch, and, when (b) is measured, the scaling model: time per
iteration vs batch size, and DDP all-reduce volume and expected efficiency. Each setting's result is printed as it is
measured, (c) last, so that a run cut short keeps the rest.
Writes the report to --out (.txt) and its JSON line beside it (.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.profiler import ProfilerActivity, profile

from realuid_lightning import (
    EMA,
    FlowMatching,
    Objective,
    OptimisationOptions,
    RealUIDModule,
    SpeedOptions,
    TeacherOptions,
)
from realuid_lightning.data.batching import batch_loader
from realuid_lightning.losses import realuid_generator_loss, realum_loss
from realuid_lightning.modules.base import lr_factor
from realuid_lightning.nets import UNet

K, ALPHA, BETA, LR, DECAYS = 5, 0.94, 0.9588, 3e-5, (0.999, 0.9996, 0.9999)
SETTINGS = {
    "a": "(a) plain PyTorch, fp32",
    "b": "(b) RealUIDModule, fp32",
    "c0": "(c0) RealUIDModule, bf16 + channels_last",
    "c": "(c) RealUIDModule, bf16 + channels_last + compile",
}


def network(device: str) -> UNet:
    """The paper's CIFAR-10 UNet (35.7M) on a GPU; a small UNet (16×16×3, 2 levels) on a CPU."""
    torch.manual_seed(0)
    if device == "cuda":
        return UNet()
    return UNet(
        sample_size=16,
        channels=3,
        block_out_channels=(32, 64),
        attention_levels=(1,),
        attention_head_dim=32,
        norm_num_groups=8,
    )


def distiller(teacher: torch.nn.Module, setting: str = "b") -> RealUIDModule:
    """The module of setting (b), (c0) or (c); (a) takes its networks and initial weights."""
    torch.manual_seed(1)
    fast_options = SpeedOptions(channels_last=True, compile=setting == "c", teacher_bf16=True, fused_adam=None)
    speed = fast_options if setting in ("c0", "c") else SpeedOptions()
    optimisation = OptimisationOptions(fake_updates=K, generator_lr=LR, fake_lr=LR, warmup_steps=500)
    return RealUIDModule(
        TeacherOptions(net=copy.deepcopy(teacher), process=FlowMatching()),
        Objective(ALPHA, BETA),
        optimisation,
        speed=speed,
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def cpu_peak_bytes(prof) -> int:
    """Peak of the running sum of the memory allocated (+) and freed (−) during a profiled region."""
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


class Meter:
    """Seconds and peak memory of each update, by type; on a CPU, ``profiled`` updates are profiled and not timed."""

    def __init__(self, device: str, warm: int, timed: int) -> None:
        self.device, self.warm, self.timed = device, warm, timed
        self.seconds = {"fake": [], "generator": []}
        self.peak = {"fake": 0, "generator": 0}
        self.warmup_seconds = 0.0

    def start(self, i: int) -> None:
        self.kind = "generator" if i % (K + 1) == K else "fake"
        self.i, self.prof = i, None
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif i >= self.warm + self.timed:
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()
        sync(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        sync(self.device)
        seconds = time.perf_counter() - self.t0
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            self.peak[self.kind] = max(self.peak[self.kind], cpu_peak_bytes(self.prof))
        elif self.i < self.warm:
            self.warmup_seconds += seconds
        elif self.warm <= self.i < self.warm + self.timed:
            self.seconds[self.kind].append(seconds)
            if self.device == "cuda":
                self.peak[self.kind] = max(self.peak[self.kind], torch.cuda.max_memory_allocated())


class LightningMeter(pl.Callback):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.meter.start(int(pl_module.iteration))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.meter.stop()


def plain_losses(gen, fake, teacher, process, x1):
    """The fake loss (two forward passes of f) and the generator loss of the official recipe, z, x0,
    t drawn in the module's order."""

    def fake_loss():
        with torch.no_grad():
            x1_gen = gen(torch.randn_like(x1))
        x0, t = torch.randn_like(x1_gen), process.sample_t(x1.shape[0], device=x1.device)
        g, r = process.sample(x0, x1_gen, t), process.sample(x0, x1, t)
        return realum_loss(fake(t, g.x_t), g.target, g.weight, ALPHA, BETA, fake(t, r.x_t), r.target, r.weight).mean()

    def generator_loss():
        x1_gen = gen(torch.randn_like(x1))
        x0, t = torch.randn_like(x1_gen), process.sample_t(x1.shape[0], device=x1.device)
        s = process.sample(x0, x1_gen, t)
        return realuid_generator_loss(teacher(t, s.x_t), fake(t, s.x_t), s.target, s.weight, ALPHA, BETA).mean()

    return fake_loss, generator_loss


def run_plain(teacher, data, device: str, meter: Meter, iterations: int) -> None:
    """(a): the K:1 loop by hand, with the module's initial weights, warm-up schedule, clipping and EMA."""
    module = distiller(teacher).to(device)
    gen, fake, teacher = module.generator, module.fake_model, module.teacher.net
    opts = [torch.optim.Adam(net.parameters(), lr=LR, betas=(0.0, 0.999)) for net in (fake, gen)]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor(500)) for o in opts]
    ema = [[p.detach().clone() for p in gen.net.parameters()] for _ in DECAYS]
    for i in range(iterations):
        x1 = data[i % len(data)].to(device)  # (b) and (c) get their batches from a CPU loader too
        meter.start(i)
        turn = int(meter.kind == "generator")
        fake_loss, generator_loss = plain_losses(gen, fake, teacher, module.process, x1)
        loss = generator_loss() if turn else fake_loss()
        opts[turn].zero_grad(set_to_none=True)
        loss.backward()
        for p in fake.parameters() if turn else []:
            p.grad = None  # the fake model's stray gradients from the generator loss
        torch.nn.utils.clip_grad_norm_([p for g in opts[turn].param_groups for p in g["params"]], 1.0)
        opts[turn].step()
        scheds[turn].step()
        if turn:
            for decay, avg in zip(DECAYS, ema):
                torch._foreach_lerp_(avg, [p.detach() for p in gen.net.parameters()], 1 - decay)
        meter.stop()


def run_module(teacher, data, device: str, meter: Meter, iterations: int, setting: str) -> None:
    """(b), (c0) or (c): RealUIDModule through a Lightning Trainer."""
    module = distiller(teacher, setting)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_steps=iterations,
        precision="32-true" if setting == "b" else "bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[EMA(DECAYS), LightningMeter(meter)],
    )
    trainer.fit(module, batch_loader(data.flatten(0, 1).cpu(), batch_size=data.shape[1], seed=0))


def loss_agreement(teacher, x1, device: str) -> dict:
    """Fake and generator losses of (a) in fp32 and of (c0) in bf16 on the same batch, weights and noise:
    relative differences. (c0), not (c): the question is bf16's round-off, and compiling once more would double
    (c)'s warm-up."""
    plain, fast = distiller(teacher).to(device), distiller(teacher, "c0").to(device)
    fast.configure_model()
    out = {}
    for kind in ("fake", "generator"):
        torch.manual_seed(2)
        fake_loss, generator_loss = plain_losses(plain.generator, plain.fake_model, plain.teacher, plain.process, x1)
        reference = (generator_loss if kind == "generator" else fake_loss)().item()
        torch.manual_seed(2)
        with torch.autocast(device, dtype=torch.bfloat16):
            value = (fast._generator_loss if kind == "generator" else fast._fake_loss)(x1, None).item()
        out[kind] = {"fp32": reference, "bf16": value, "relative_difference": abs(value - reference) / abs(reference)}
    return out


def measure(setting: str, teacher, data, device: str, warm: int, timed: int) -> dict:
    profiled = 0 if device == "cuda" else K + 1
    meter = Meter(device, warm, timed)
    if setting == "a":
        run_plain(teacher, data, device, meter, warm + timed + profiled)
    else:
        run_module(teacher, data, device, meter, warm + timed + profiled, setting)
    batch = data.shape[1]
    t = {kind: statistics.median(s) for kind, s in meter.seconds.items()}
    t["average"] = (K * t["fake"] + t["generator"]) / (K + 1)
    return {
        "seconds": t,
        "images_per_s": {k: batch / v for k, v in t.items()},
        "peak_mib": {**{k: v / 2**20 for k, v in meter.peak.items()}, "average": max(meter.peak.values()) / 2**20},
        "warmup_seconds": meter.warmup_seconds,
    }


def ddp_model(params: dict, seconds_at_batch: dict, world_sizes: list[int], bus_gbps: list[float]) -> list[dict]:
    """Expected DDP efficiency T(B)/(T(B) + t_allreduce) per iteration, no overlap assumed (a lower bound).

    Ring all-reduce of n bytes over W ranks moves 2(W − 1)/W·n bytes per rank. Values all-reduced per iteration on
    average: realuid_ddp (K·P_fake + P_gen)/(K + 1); find_unused_parameters (P_fake + P_gen) on every update.
    """
    per_iteration = {
        "realuid_ddp": (K * params["fake_model"] + params["generator"]) / (K + 1),
        "find_unused": params["fake_model"] + params["generator"],
    }
    rows = []
    for batch, seconds in seconds_at_batch.items():
        for world in world_sizes:
            for gbps in bus_gbps:
                row = {"batch_per_rank": batch, "world": world, "bus_GBps": gbps, "compute_s": seconds}
                for name, values in per_iteration.items():
                    comm = 2 * (world - 1) / world * 4 * values / (gbps * 1e9)
                    row[f"{name}_efficiency"] = seconds / (seconds + comm)
                rows.append(row)
    return rows


def report(
    results: dict, machine: str, batch: int, params: dict, scaling: dict, ddp: list, agreement: dict
) -> list[str]:
    lines = [
        f"RealUID throughput on {machine}; UNet {params['generator'] / 1e6:.2f}M parameters, batch {batch}, K = {K}",
        "",
        "| setting | fake update img/s | generator update img/s | K:1 average img/s | peak MiB fake / generator "
        "| warm-up cycle s |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        ips, peak = r["images_per_s"], r["peak_mib"]
        lines.append(
            f"| {SETTINGS[key]} | {ips['fake']:.1f} | {ips['generator']:.1f} | {ips['average']:.1f} | "
            f"{peak['fake']:.0f} / {peak['generator']:.0f} | {r['warmup_seconds']:.1f} |"
        )
    if len(results) > 1:
        lines += ["", "ratios of K:1 images/s: " + ", ".join(f"{k} = {v:.3f}" for k, v in ratios(results).items())]
    if agreement:
        lines.append(
            "loss agreement on a fixed batch, (a) fp32 vs (c0) bf16: "
            + ", ".join(
                f"{k} {v['fp32']:.4g} vs {v['bf16']:.4g} (relative {v['relative_difference']:.2e})"
                for k, v in agreement.items()
            )
        )
    if not scaling:
        return lines
    lines += [
        "",
        "scaling, (b) fp32: seconds per iteration (K:1 average) vs batch",
        "| batch | s / iteration | images/s |",
        "|---|---|---|",
    ]
    lines += [f"| {bs} | {s:.4f} | {bs / s:.1f} |" for bs, s in scaling.items()]
    fit = linear_fit(scaling)
    lines += [
        f"T(B) ≈ {fit[0]:.4f} s + {fit[1] * 1e3:.3f} ms·B",
        "",
        "DDP all-reduce per update (fp32 gradients): "
        f"realuid_ddp fake {4 * params['fake_model'] / 2**20:.1f} MiB, generator "
        f"{4 * params['generator'] / 2**20:.1f} MiB; "
        f"find_unused_parameters {4 * (params['fake_model'] + params['generator']) / 2**20:.1f} "
        "MiB on every update",
        "",
        "| batch per rank | ranks | bus GB/s | compute s | efficiency realuid_ddp | efficiency find_unused |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch_per_rank']} | {r['world']} | {r['bus_GBps']:g} | {r['compute_s']:.4f} | "
        f"{r['realuid_ddp_efficiency']:.3f} | "
        f"{r['find_unused_efficiency']:.3f} |"
        for r in ddp
    ]
    return lines


def ratios(results: dict) -> dict[str, float]:
    """K:1 images/s of each measured setting over each measured setting before it in (a), (b), (c0), (c)."""
    keys = [k for k in SETTINGS if k in results]
    speed = {k: results[k]["images_per_s"]["average"] for k in keys}
    return {f"({k})/({base})": speed[k] / speed[base] for i, k in enumerate(keys) for base in keys[:i]}


def linear_fit(points: dict) -> tuple[float, float]:
    """Least squares T(B) = a + b·B."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="default: 256 on a GPU, 32 on a CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        choices=list(SETTINGS),
        help="settings to measure (default: all); the scaling table and the DDP model need (b)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="(a), (b) alternations, medians pooled (default: 2 on a CPU, 1 on a GPU)",
    )
    parser.add_argument("--timed-cycles", type=int, default=2, help="K + 1 iterations each, after one warm-up cycle")
    parser.add_argument(
        "--bus-gbps", type=float, nargs="+", default=[300.0, 25.0], help="all-reduce bus bandwidths for the DDP model"
    )
    parser.add_argument(
        "--out", default=None, help="report .txt (default benchmarks/results/throughput_{cpu,gpu}.txt); JSON beside it"
    )
    args = parser.parse_args()
    device, gpu = args.device, args.device == "cuda"
    batch, rounds = args.batch or (256 if gpu else 32), args.rounds or (1 if gpu else 2)
    out = Path(args.out or f"benchmarks/results/throughput_{'gpu' if gpu else 'cpu'}.txt")
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    machine = (
        torch.cuda.get_device_name()
        if gpu
        else f"{platform.processor() or platform.machine()}, {args.threads} thread(s)"
    ) + f", torch {torch.__version__}"
    start = time.perf_counter()
    teacher = network(device)
    shape = (teacher.channels, teacher.sample_size, teacher.sample_size)
    images = lambda b: torch.rand(4, b, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    warm, timed = K + 1, args.timed_cycles * (K + 1)
    runs = {key: [] for key in ("a", "b") if key in args.settings}
    for _ in range(rounds):  # alternate, so that a slow spell of a shared machine hits both
        for key in runs:
            runs[key].append(shown(key, measure(key, teacher, images(batch), device, warm, timed)))
    results = {key: pooled(r) for key, r in runs.items()}
    if "c0" in args.settings:
        results["c0"] = shown("c0", measure("c0", teacher, images(batch), device, warm, timed))
    agreement = {}
    if {"c0", "c"} & set(args.settings):
        agreement = shown("agreement", loss_agreement(teacher, images(batch)[0].to(device), device))
    if "c" in args.settings:  # last: compiling the networks is the longest part
        results["c"] = shown("c", measure("c", teacher, images(batch), device, warm, timed))
    params = {
        "generator": sum(p.numel() for p in teacher.parameters()),
        "fake_model": sum(p.numel() for p in teacher.parameters()),
    }
    scaling, ddp = {}, []
    if "b" in results:
        scaling = {
            bs: measure("b", teacher, images(bs), device, warm, timed)["seconds"]["average"]
            for bs in (batch // 4, batch // 2)
        }
        scaling[batch] = results["b"]["seconds"]["average"]
        scaling = dict(sorted(scaling.items()))
        ddp = ddp_model(params, {bs: s for bs, s in scaling.items() if bs >= batch // 2}, [8, 64], args.bus_gbps)
    lines = report(results, machine, batch, params, scaling, ddp, agreement)
    summary = {
        "benchmark": "throughput",
        "machine": machine,
        "batch": batch,
        "fake_updates": K,
        "params": params,
        "results": results,
        "ratios": ratios(results),
        "scaling_seconds": scaling,
        "loss_agreement": agreement,
        "ddp_model": ddp,
        "total_seconds": time.perf_counter() - start,
    }
    lines += ["", f"total {summary['total_seconds']:.0f} s", json.dumps(summary)]
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))


def shown(key: str, result: dict) -> dict:
    """``result`` of setting ``key``, printed as it comes, so that a run cut short keeps what it measured."""
    print(f"({key}) {json.dumps(result)}", flush=True)
    return result


def pooled(runs: list[dict]) -> dict:
    """Several runs of one setting: the median seconds per update type (as means of the runs' medians), the
    largest peaks and the longest warm-up."""
    seconds = {k: statistics.mean(r["seconds"][k] for r in runs) for k in ("fake", "generator")}
    seconds["average"] = (K * seconds["fake"] + seconds["generator"]) / (K + 1)
    batch = runs[0]["images_per_s"]["fake"] * runs[0]["seconds"]["fake"]
    return {
        "seconds": seconds,
        "images_per_s": {k: batch / v for k, v in seconds.items()},
        "peak_mib": {k: max(r["peak_mib"][k] for r in runs) for k in runs[0]["peak_mib"]},
        "warmup_seconds": max(r["warmup_seconds"] for r in runs),
        "runs": runs,
    }


if __name__ == "__main__":
    main()
