"""Train a digits feature network for Fréchet distances: DigitsFeatures (8×8) or MNISTFeatures (28×28).

The network is trained as a 10-class classifier; the file keeps the whole network, classification
head included, so ``DigitsFeatures.pretrained().logits(x)`` classifies and the tests can check the
accuracy. Sources and their held-out splits:

- ``--source sklearn`` (default): scikit-learn's 1 797 8×8 digits; every fifth image (index % 5 == 0,
  360 images) is held out, the other 1437 train DigitsFeatures (random shifts of up to 1 pixel).
- ``--source mnist5k``: the 5 000 MNIST digits of ``DigitsDataModule(source='mnist5k', heldout=1000)``;
  its 1 000 held-out images (the last 1 000) are held out here too, the 4 000 training images train
  MNISTFeatures (random shifts of up to 2 pixels).

Both use random contrast in [0.8, 1.2].

    OMP_NUM_THREADS=1 python scripts/train_digits_features.py                    # ~10 s on one CPU thread
    OMP_NUM_THREADS=1 python scripts/train_digits_features.py --source mnist5k   # ~3 min on one CPU thread
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from realuid_lightning.data.digits import load_digits_source
from realuid_lightning.nets.features import DigitsFeatures, MNISTFeatures

ASSETS = Path(__file__).resolve().parents[1] / "src" / "realuid_lightning"
MNIST_HELDOUT = 1000  # as in configs/mnist_teacher.yaml: DigitsDataModule(source='mnist5k', heldout=1000)
# source → (network, epochs, largest shift in pixels)
SOURCES = {"sklearn": (DigitsFeatures, 60, 1), "mnist5k": (MNISTFeatures, 30, 2)}


def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (1797, 1, 8, 8) in [0, 1], labels (1797,) and the held-out mask (index % 5 == 0)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    return images, labels, torch.arange(len(labels)) % 5 == 0


def mnist5k_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (5000, 1, 28, 28) in [0, 1], labels (5000,) and the held-out mask
    (the last 1 000, as DigitsDataModule)."""
    images, labels = load_digits_source("mnist5k")
    return (images + 1) / 2, labels, torch.arange(len(labels)) >= len(labels) - MNIST_HELDOUT


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 1) -> torch.Tensor:
    """Shift each image (B, 1, H, W) by (dy, dx) ∈ {−s, …, s}² (zero fill) and scale its contrast by c ∈ [0.8, 1.2]."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift,) * 4)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, x.shape[0]), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(-1, 1, h, w + 2 * shift)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(-1, 1, h, w)
    shifted = shifted.gather(3, cols)
    contrast = 0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=g)
    return (shifted * contrast).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=list(SOURCES), default="sklearn")
    parser.add_argument("--epochs", type=int, default=None, help="default: 60 (sklearn), 30 (mnist5k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged weights file of the network")
    args = parser.parse_args()
    net_class, epochs, shift = SOURCES[args.source]
    epochs = args.epochs or epochs
    out = args.out or ASSETS / net_class.weights_file
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    images, labels, held_out = sklearn_digits() if args.source == "sklearn" else mnist5k_digits()
    x_train, y_train, x_test, y_test = images[~held_out], labels[~held_out], images[held_out], labels[held_out]
    net = net_class()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train), generator=g).split(64):
            loss = F.cross_entropy(net.logits(augment(x_train[idx], g, shift)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        train_acc = (net.logits(x_train).argmax(1) == y_train).float().mean().item()
        test_acc = (net.logits(x_test).argmax(1) == y_test).float().mean().item()
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # no metadata: safetensors writes it in random order, and reruns must give the same bytes
    save_file(state, str(out))
    print(
        f"{net_class.__name__} on {args.source}: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} "
        f"({len(x_test)} held-out images), {time.perf_counter() - start:.1f} s, "
        f"{out.stat().st_size / 1024:.0f} KB -> {out}"
    )


if __name__ == "__main__":
    main()
