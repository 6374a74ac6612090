import pytest
import torch
from helpers import sections, trainer

from realuid_lightning import FlowMatching, Objective, RealUIDModule, TeacherOptions
from realuid_lightning.data.batching import batch_loader
from realuid_lightning.losses import gan_discriminator_loss
from realuid_lightning.nets import MLP, GANHead, UNet

TINY = dict(
    sample_size=8,
    channels=1,
    block_out_channels=(16, 32),
    layers_per_block=1,
    attention_levels=(1,),
    attention_head_dim=8,
    norm_num_groups=8,
)


def test_output_shape_and_time_convention():
    """net(t, x) = UNet2DModel(x, 1000·t).sample, with the input's shape."""
    torch.manual_seed(0)
    net, x, t = UNet(**TINY).eval(), torch.randn(3, 1, 8, 8), torch.tensor([0.0, 0.5, 1.0])
    out = net(t, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, net.unet(x, 1000 * t).sample)
    assert not torch.allclose(net(t, x), net(t.flip(0), x))


def test_class_labels():
    """A class-conditional UNet uses its labels and refuses to run without them; an unconditional one refuses labels."""
    net, x, t = UNet(**TINY, num_classes=10).eval(), torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():
        net.unet.class_embedding.weight.normal_()
    assert not torch.allclose(net(t, x, torch.tensor([0, 0])), net(t, x, torch.tensor([3, 7])))
    with pytest.raises(ValueError, match="class-conditional"):
        net(t, x)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(**TINY)(t, x, torch.tensor([1, 2]))


def test_bottleneck_is_the_mid_block_output():
    """bottleneck() equals the mid block's output inside the full forward pass."""
    net, x, t = UNet(**TINY, num_classes=4).eval(), torch.randn(2, 1, 8, 8), torch.rand(2)
    seen = {}
    net.unet.mid_block.register_forward_hook(lambda m, i, o: seen.setdefault("mid", o))
    net(t, x, torch.tensor([1, 2]))
    torch.testing.assert_close(net.bottleneck(t, x, torch.tensor([1, 2])), seen["mid"])


def test_gan_head_gradients():
    """The discriminator loss reaches the head and the fake model's encoder, not its decoder."""
    net, head = UNet(**TINY), GANHead(32, 8)
    features = net.bottleneck(torch.rand(4), torch.randn(4, 1, 8, 8))
    logits = head(features)
    assert logits.shape == (4,)
    gan_discriminator_loss(logits[:2], logits[2:]).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert net.unet.conv_in.weight.grad.abs().sum() > 0 and net.unet.conv_out.weight.grad is None


def test_bad_unet_configs():
    """Invalid attention levels or channel/group combinations are named."""
    with pytest.raises(ValueError, match=r"attention_levels=\[2\]"):
        UNet(**{**TINY, "attention_levels": (2,)})
    with pytest.raises(ValueError, match="multiples of norm_num_groups=8"):
        UNet(**{**TINY, "block_out_channels": (12, 32)})


def gan_distiller(**kwargs):
    torch.manual_seed(0)
    return RealUIDModule(
        **sections(
            net=UNet(**TINY),
            process=FlowMatching(),
            alpha=1.0,
            beta=1.0,
            warmup_steps=1,
            gan_generator_weight=0.3,
            gan_discriminator_weight=1.0,
            **kwargs,
        )
    )


def test_gan_distillation_updates_the_head_on_fake_steps_only():
    """With the GAN loss the head trains with the fake model and stays fixed on generator updates."""
    module = gan_distiller(fake_updates=1)
    data = torch.rand(64, 1, 8, 8) * 2 - 1
    head = [p.detach().clone() for p in module.gan_head.parameters()]

    loader = batch_loader(data, batch_size=16, seed=0)
    trainer(1).fit(module, train_dataloaders=loader)
    after_fake = [p.detach().clone() for p in module.gan_head.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(head, after_fake))
    trainer(1).fit(module, train_dataloaders=loader)  # iteration 1: the generator update
    assert all(torch.equal(a, b) for a, b in zip(after_fake, module.gan_head.parameters()))
    assert int(module.generator_updates) == 1


def test_gan_needs_a_bottleneck():
    """Asking for the GAN loss with a network without bottleneck features is a clear error."""
    with pytest.raises(ValueError, match="bottleneck features .* got MLP"):
        RealUIDModule(TeacherOptions(net=MLP(), process=FlowMatching()), Objective(gan_discriminator_weight=1.0))
