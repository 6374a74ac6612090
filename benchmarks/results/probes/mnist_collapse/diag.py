"""The record of a diagnosis (2026-12-03): the generator's output statistics on 256 fixed noises every 10 generator
updates of an MNIST run of benchmarks/convergence.py's recipe, with the module's logged losses.

    OMP_NUM_THREADS=1 python benchmarks/results/probes/mnist_collapse/diag.py realuid1.02 0 1800 scratch
    OMP_NUM_THREADS=1 python benchmarks/results/probes/mnist_collapse/diag.py realuid1.02 0 4800 teacher

Arguments: setting, seed, iterations (the cosine's horizon), fake-model init. Run from the repository root; stopped by
hand once the statistics had told their story (the logs beside this file).
"""

import logging
import sys
import warnings

import lightning.pytorch as pl
import torch

sys.path.insert(0, "benchmarks")
import convergence  # noqa: E402  (benchmarks/ is not a package)

from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402


class OutputStatistics(pl.Callback):
    """Mean, std, max |x| and the share of |x| > 1 of G(noise) every 10 generator updates."""

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise, self.last = noise, -1

    def on_train_batch_end(self, trainer, module, *args) -> None:
        updates = int(module.generator_updates)
        if updates % 10 == 0 and updates != self.last:
            self.last = updates
            with torch.no_grad():
                x = module.generator(self.noise)
            logged = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
            stats = f"mean {x.mean():.3f} std {x.std():.3f} maxabs {x.abs().max():.2f}"
            print(updates, stats, f"frac>1 {(x.abs() > 1).float().mean():.3f}", logged, flush=True)


def main() -> None:
    setting, seed, iterations, init = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    study = ["--data", "mnist5k", "--iterations", iterations, "--decays", "0.99", "0.995", "0.999", "--lr", "1e-4"]
    args = convergence.arguments(convergence.DEFAULT_RECIPE + study + ["--fake-init", init])
    net, process, record = network_from_checkpoint(load_checkpoint("checkpoints/mnist_teacher.ckpt"), ema=None, what="")
    noise = torch.randn(256, *record.data_shape, generator=torch.Generator().manual_seed(1))
    convergence.distil(net, process, setting, seed, args, [OutputStatistics(noise)])


if __name__ == "__main__":
    main()
