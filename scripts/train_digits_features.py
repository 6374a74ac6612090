"""Train DigitsFeatures, the small feature network for Fréchet distances on scikit-learn's 8×8 digits.

The network is trained as a 10-class classifier; the file keeps the whole network, classification
head included (650 extra parameters), so ``DigitsFeatures.pretrained().logits(x)`` classifies and the
tests can check the accuracy. Held-out split: every fifth image (index % 5 == 0, 360 images); the
other 1437 train it, with random shifts of up to one pixel and random contrast in [0.8, 1.2].

    OMP_NUM_THREADS=1 python scripts/train_digits_features.py  # ~10 s on one CPU thread
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from realuid_lightning.nets.features import DigitsFeatures

OUT = Path(__file__).resolve().parents[1] / "src" / "realuid_lightning" / "assets" / "digits_features.safetensors"


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (1797, 1, 8, 8) in [0, 1], labels (1797,) and the held-out mask (index % 5 == 0)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    return images, labels, torch.arange(len(labels)) % 5 == 0


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each image by (dy, dx) ∈ {−1, 0, 1}² (zero fill) and scale its contrast by c ∈ [0.8, 1.2]."""
    padded = F.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=g)
    rows = (dy[:, None] + torch.arange(8))[:, None, :, None].expand(-1, 1, 8, 10)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(8))[:, None, None, :].expand(-1, 1, 8, 8)
    shifted = shifted.gather(3, cols)
    contrast = 0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=g)
    return (shifted * contrast).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    images, labels, held_out = digits()
    x_train, y_train, x_test, y_test = images[~held_out], labels[~held_out], images[held_out], labels[held_out]
    net = DigitsFeatures()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x_train), generator=g).split(64):
            loss = F.cross_entropy(net.logits(augment(x_train[idx], g)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        train_acc = (net.logits(x_train).argmax(1) == y_train).float().mean().item()
        test_acc = (net.logits(x_test).argmax(1) == y_test).float().mean().item()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(args.out))  # no metadata: safetensors writes it in random order, and reruns must give the same bytes
    print(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} ({len(x_test)} held-out images), "
          f"{time.perf_counter() - start:.1f} s, {args.out.stat().st_size / 1024:.0f} KB -> {args.out}")


if __name__ == "__main__":
    main()
