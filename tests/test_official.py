import sys

import pytest
import torch

from realuid_lightning import ConfigError, FlowMatching, GeneratorOptions, RealUIDModule, TeacherOptions
from realuid_lightning.checkpoint import instantiate, load_checkpoint, spec_of
from realuid_lightning.cli import main
from realuid_lightning.nets.torchcfm import TorchCFMUNet
from realuid_lightning.official import load_official

ARCH = dict(
    dim=(1, 8, 8),
    num_channels=32,
    num_res_blocks=1,
    channel_mult=(1, 2),
    attention_resolutions="4",
    num_heads=2,
    num_head_channels=16,
)
FLAGS = [
    "--dim",
    "1",
    "8",
    "8",
    "--num-channels",
    "32",
    "--num-res-blocks",
    "1",
    "--channel-mult",
    "1",
    "2",
    "--attention-resolutions",
    "4",
    "--num-heads",
    "2",
    "--num-head-channels",
    "16",
]
DECAYS = (0.999, 0.9996, 0.9999)


@pytest.fixture(autouse=True)
def needs_torchcfm(request):
    """Every test but the missing-package one needs torchcfm (the 'official' extra)."""
    if request.node.name != "test_missing_torchcfm_names_the_extra":
        pytest.importorskip("torchcfm.models.unet.unet")


def official_net(seed: int, **extra) -> torch.nn.Module:
    """A small torchcfm UNetModelWrapper with random (non-zero) weights, in eval mode."""
    from torchcfm.models.unet.unet import UNetModelWrapper

    torch.manual_seed(seed)
    net = UNetModelWrapper(**ARCH, **extra)
    with torch.no_grad():
        for p in net.parameters():  # torchcfm zero-initialises the output convs; make every weight matter
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def with_gan_head(state: dict) -> dict:
    """The extra keys of the official UNetModelWrapperWithHead (its GAN discriminator head)."""
    return {**state, "cls_pred_branch.0.weight": torch.zeros(64, 64, 2, 2), "cls_pred_branch.6.bias": torch.zeros(1)}


def write_official(path, key=str, **extra):
    """An official-layout file: RealUID teacher and distillation entries, optimiser and scheduler state;
    returns the nets."""
    nets = {d: official_net(i, **extra) for i, d in enumerate(DECAYS)}
    gens = {d: official_net(10 + i, **extra) for i, d in enumerate(DECAYS)}
    raw = official_net(20, **extra)
    optim = torch.optim.Adam(raw.parameters(), betas=(0.0, 0.999))
    raw(torch.rand(2), torch.randn(2, 1, 8, 8), *([torch.tensor([0, 1])] if extra else [])).square().mean().backward()
    optim.step()
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda k: min(k, 5) / 5)
    torch.save(
        {
            "net_model": raw.state_dict(),
            "ema_models": {key(d): with_gan_head(n.state_dict()) for d, n in nets.items()},
            "gen": raw.state_dict(),
            "ema_gens": {key(d): with_gan_head(g.state_dict()) for d, g in gens.items()},
            "sched": sched.state_dict(),
            "optim": optim.state_dict(),
            "step": 7,
        },
        path,
    )
    return nets, gens, raw


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, generator=g), torch.randn(4, 1, 8, 8, generator=g)


@pytest.mark.parametrize("key", [str, float], ids=["str-decay", "float-decay"])
def test_official_weights_load_strictly_and_match(tmp_path, key):
    """Each EMA decay (keyed by str or float) loads strictly and reproduces the original torchcfm module's outputs."""
    nets, gens, _ = write_official(tmp_path / "official.pt", key)
    t, x = inputs()
    for decay in (0.999, 0.9999):
        for role, originals in (("teacher", nets), ("generator", gens)):
            net = load_official(tmp_path / "official.pt", role, decay, **ARCH)
            with torch.no_grad():
                assert torch.equal(net(t, x), originals[decay](t, x))


def test_raw_weights_and_torchcfm_layouts(tmp_path):
    """decay=None picks net_model; torchcfm's {'net_model', 'ema_model'} and a DataParallel plain state dict
    load too."""
    _, _, raw = write_official(tmp_path / "official.pt")
    ema = official_net(5)
    t, x = inputs()
    torch.save(
        {
            "net_model": {f"module.{k}": v for k, v in raw.state_dict().items()},
            "ema_model": ema.state_dict(),
            "step": 3,
        },
        tmp_path / "torchcfm.pt",
    )
    torch.save({f"module.{k}": v for k, v in ema.state_dict().items()}, tmp_path / "plain.pt")
    with torch.no_grad():
        assert torch.equal(load_official(tmp_path / "official.pt", "teacher", None, **ARCH)(t, x), raw(t, x))
        assert torch.equal(load_official(tmp_path / "torchcfm.pt", "teacher", None, **ARCH)(t, x), raw(t, x))
        assert torch.equal(load_official(tmp_path / "torchcfm.pt", "teacher", 0.9999, **ARCH)(t, x), ema(t, x))
        assert torch.equal(load_official(tmp_path / "plain.pt", "generator", 0.999, **ARCH)(t, x), ema(t, x))


def test_mismatches_fail_with_one_line_naming_the_cause(tmp_path):
    """A missing key, an unknown decay, the wrong role or a missing label embedding each give a one-line ConfigError."""
    state = official_net(0).state_dict()
    del state["out.2.weight"]
    torch.save({"ema_models": {"0.999": state}}, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=r"missing keys: out\.2\.weight\b") as err:
        load_official(tmp_path / "missing.pt", "teacher", 0.999, **ARCH)
    assert "\n" not in str(err.value)
    write_official(tmp_path / "official.pt")
    with pytest.raises(ConfigError, match=r"no EMA with decay 0\.5; available: \[0\.999, 0\.9996, 0\.9999\]"):
        load_official(tmp_path / "official.pt", "teacher", 0.5, **ARCH)
    torch.save({"ema_gens": {"0.999": official_net(0).state_dict()}}, tmp_path / "gen.pt")
    with pytest.raises(ConfigError, match=r"no teacher weights.*role='generator'"):
        load_official(tmp_path / "gen.pt", "teacher", 0.999, **ARCH)
    torch.save(
        {"ema_models": {"0.999": official_net(0, class_cond=True, num_classes=3).state_dict()}}, tmp_path / "cond.pt"
    )
    with pytest.raises(ConfigError, match=r"class-conditional \(3 classes\).*num_classes=3"):
        load_official(tmp_path / "cond.pt", "teacher", 0.999, **ARCH)
    with pytest.raises(ConfigError, match="role='student' is not supported"):
        load_official(tmp_path / "official.pt", "student", 0.999, **ARCH)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'num_channel'"):
        load_official(tmp_path / "official.pt", "teacher", 0.999, num_channel=32)


def test_file_with_code_is_refused(tmp_path):
    """A pickle that holds a code object is refused by the weights-only loader, never unpickled."""
    torch.save(
        {"ema_models": {"0.999": official_net(0).state_dict()}, "args": torch.nn.Identity()}, tmp_path / "code.pt"
    )
    with pytest.raises(ConfigError, match="cannot be read safely"):
        load_official(tmp_path / "code.pt", "teacher", 0.999, **ARCH)


def test_conditional_import_uses_labels(tmp_path):
    """A class-conditional checkpoint loads with num_classes and passes cond as torchcfm's y."""
    nets, _, _ = write_official(tmp_path / "cond.pt", class_cond=True, num_classes=3)
    net = load_official(tmp_path / "cond.pt", "teacher", 0.9996, class_cond=True, num_classes=3, **ARCH)
    (t, x), y = inputs(), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        assert torch.equal(net(t, x, y), nets[0.9996](t, x, y))
    with pytest.raises(ValueError, match="class-conditional"):
        net(t, x)


def test_spec_round_trip_and_bottleneck():
    """The adapter rebuilds from its spec, and its bottleneck is the output of torchcfm's middle block."""
    net = TorchCFMUNet(**ARCH).eval()
    copy = instantiate(spec_of(net))
    copy.load_state_dict(net.state_dict())
    t, x = inputs()
    seen = []
    net.unet.middle_block.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        assert torch.equal(copy(t, x), net(t, x))
        features = net.bottleneck(t, x)
    assert features.shape == (4, net.bottleneck_channels, 4, 4) and torch.equal(features, seen[0])


def test_missing_torchcfm_names_the_extra(monkeypatch):
    """Without torchcfm the adapter raises a ConfigError telling how to install it."""
    for name in ("torchcfm", "torchcfm.models", "torchcfm.models.unet", "torchcfm.models.unet.unet"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'realuid-lightning\[official\]'"):
        TorchCFMUNet(**ARCH)


def test_import_teacher_cli(tmp_path, capsys):
    """import-official writes a teacher checkpoint that realuid sample samples and RealUIDModule accepts as
    teacher_ckpt."""
    nets, _, _ = write_official(tmp_path / "official.pt")
    out = tmp_path / "teacher.ckpt"
    main(["import-official", "--ckpt", str(tmp_path / "official.pt"), "--role", "teacher", "--out", str(out), *FLAGS])
    assert "wrote teacher checkpoint" in capsys.readouterr().out and not list(tmp_path.glob(".*.tmp"))
    ckpt = load_checkpoint(out)
    assert ckpt["realuid"]["module"] == "MatchingModule" and ckpt["realuid"]["data_shape"] == [1, 8, 8]
    size = sum(v.numel() * v.element_size() for v in ckpt["state_dict"].values())
    assert out.stat().st_size < 1.5 * size  # the EMA entry shares the tensors of the state dict
    main(["sample", "--ckpt", str(out), "--num", "5", "--steps", "2", "--out", str(tmp_path / "s.pt")])
    samples = torch.load(tmp_path / "s.pt", weights_only=True)
    assert samples.shape == (5, 1, 8, 8) and torch.isfinite(samples).all()
    t, x = inputs()
    for ema in (None, 0.999):
        module = RealUIDModule(TeacherOptions(teacher_ckpt=str(out), teacher_ema=ema))
        assert isinstance(module.process, FlowMatching) and module.data_shape == [1, 8, 8]
        with torch.no_grad():
            assert torch.equal(module.teacher(t, x), nets[0.999](t, x))


def test_import_generator_samples_z_plus_net(tmp_path, capsys):
    """An imported generator samples G(z) = z + g(0, z) and initialises fine-tuning through generator_ckpt."""
    _, gens, _ = write_official(tmp_path / "official.pt")
    out = tmp_path / "generator.ckpt"
    main(
        [
            "import-official",
            "--ckpt",
            str(tmp_path / "official.pt"),
            "--role",
            "generator",
            "--decay",
            "0.9999",
            "--out",
            str(out),
            *FLAGS,
        ]
    )
    main(["sample", "--ckpt", str(out), "--ema", "raw", "--num", "6", "--seed", "3", "--out", str(tmp_path / "g.pt")])
    z = torch.randn((6, 1, 8, 8), generator=torch.Generator("cpu").manual_seed(3))
    with torch.no_grad():
        expected = z + gens[0.9999](torch.zeros(6), z)
    torch.testing.assert_close(torch.load(tmp_path / "g.pt", weights_only=True), expected)
    module = RealUIDModule(
        TeacherOptions(net=TorchCFMUNet(**ARCH), process=FlowMatching()),
        generator=GeneratorOptions(generator_ckpt=str(out), generator_ema=0.9999),
    )
    t, x = inputs()
    with torch.no_grad():
        assert torch.equal(module.generator.net.eval()(t, x), gens[0.9999](t, x))
