"""Mixed precision and the speed options of RealUIDModule: bf16-mixed, teacher_bf16, channels_last, fused Adam,
compile."""

import os

import pytest
import torch
from helpers import sections, tiny_data, tiny_distiller, trainer
from lightning.pytorch import Callback
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader

from realuid_lightning import ConfigError, FlowMatching, RealUIDModule
from realuid_lightning.losses import general_realuid_objective, realuid_generator_loss
from realuid_lightning.modules.base import total_grad_norm
from realuid_lightning.nets import UNet


def tiny_unet() -> UNet:
    return UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(16, 32),
        attention_levels=(),
        attention_head_dim=16,
        norm_num_groups=8,
    )


def unet_distiller(**kwargs) -> RealUIDModule:
    torch.manual_seed(0)
    kwargs = {
        "alpha": 0.94,
        "beta": 0.9588,
        "fake_updates": 1,
        "warmup_steps": 0,
        "generator_lr": 1e-3,
        "fake_lr": 1e-3,
        **kwargs,
    }
    return RealUIDModule(**sections(net=tiny_unet(), process=FlowMatching(), **kwargs))


def images(n_batches: int = 4, batch: int = 8) -> DataLoader:
    return DataLoader(
        list(torch.randn(n_batches, batch, 1, 8, 8, generator=torch.Generator().manual_seed(0)).tanh()), batch_size=None
    )


class Losses(Callback):
    """The fake and generator losses logged at each iteration."""

    def __init__(self) -> None:
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append({k: v for k, v in trainer.callback_metrics.items() if k.endswith("_loss")})


def params(net):
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("kwargs", [{}, {"gamma": 0.97}])
def test_bf16_mixed_trains_with_finite_losses(kwargs):
    """precision='bf16-mixed' on a UNet: 4 iterations (2 per network) with finite losses;
    the weights stay fp32 and change."""
    module, losses = unet_distiller(**kwargs), Losses()
    gen, fake = params(module.generator), params(module.fake_model)
    trainer(4, callbacks=[losses], precision="bf16-mixed").fit(module, images())
    assert len(losses.values) == 4 and set(losses.values[-1]) == {"train/fake_loss", "train/generator_loss"}
    assert all(torch.isfinite(v) for step in losses.values for v in step.values())
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(gen, params(module.generator)))
    assert not any(torch.equal(a, b) for a, b in zip(fake, params(module.fake_model)))


@pytest.mark.parametrize("kwargs", [{}, {"gamma": 0.97}])
def test_losses_are_fp32_under_autocast(kwargs):
    """Under bf16 autocast the networks return bf16, the fake and generator losses are still fp32."""
    module = unet_distiller(**kwargs)
    x1 = torch.randn(4, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.fake_model(torch.rand(4), x1).dtype == torch.bfloat16
        assert (
            module._fake_loss(x1, None).dtype == torch.float32
            and module._generator_loss(x1, None).dtype == torch.float32
        )


def test_loss_reductions_upcast_16_bit_inputs():
    """A loss of bf16 network outputs = the same loss of those outputs cast to fp32 (reduced in fp32, not bf16)."""
    g = torch.Generator().manual_seed(0)
    teacher, fake = (torch.randn(6, 3, 4, 4, generator=g).bfloat16() for _ in range(2))
    target, weight = torch.randn(6, 3, 4, 4, generator=g), torch.rand(6, generator=g)
    for loss in (
        lambda f, h: general_realuid_objective(f, h, target, weight, 0.94, 0.96, 0.97),
        lambda f, h: realuid_generator_loss(f, h, target, weight, 0.94, 0.96),
    ):
        low, high = loss(teacher, fake), loss(teacher.float(), fake.float())
        assert low.dtype == torch.float32 and torch.equal(low, high)


def test_teacher_bf16_is_bf16_inference_close_to_fp32():
    """teacher_bf16 keeps the teacher's weights in bf16 and returns fp32 within bf16 round-off of the fp32 teacher."""
    fp32, bf16 = unet_distiller(), unet_distiller(teacher_bf16=True)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in bf16.teacher.parameters())
    t, x = torch.rand(8), torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        reference, out = fp32.teacher(t, x), bf16.teacher(t, x)
    assert out.dtype == torch.float32
    assert (out - reference).norm() < 0.05 * reference.norm()
    trainer(2).fit(bf16, images())
    assert int(bf16.iteration) == 2


def grads_and_loss(module: RealUIDModule, x1: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The fake loss at a fixed noise draw and its gradient with respect to the fake model."""
    torch.manual_seed(1)
    loss = module._fake_loss(x1, None)
    return loss.detach(), torch.autograd.grad(loss, list(module.fake_model.parameters()))


def test_channels_last_changes_memory_layout_not_results():
    """channels_last puts the conv weights of all three networks in NHWC;
    the loss and gradients equal NCHW's to round-off."""
    plain, nhwc = unet_distiller(), unet_distiller(channels_last=True)
    trainer(2).fit(nhwc, images())
    for net in (nhwc.generator.net, nhwc.fake_model, nhwc.teacher.net):
        convs = [p for p in net.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    plain.load_state_dict(nhwc.state_dict())
    x1 = torch.randn(8, 1, 8, 8)
    (loss_a, grads_a), (loss_b, grads_b) = grads_and_loss(plain, x1), grads_and_loss(nhwc, x1)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_adam_matches_the_default_adam():
    """fused_adam=True builds torch's fused Adam (CPU too); one step from the same gradients equals the
    default Adam's."""
    fused = tiny_distiller(fake_updates=1, fused_adam=True)
    fit = trainer(1)
    fit.fit(fused, tiny_data())
    assert all(opt.defaults["fused"] for opt in fit.optimizers)
    plain = tiny_distiller(fake_updates=1)
    plain.load_state_dict(fused.state_dict())
    (opt_fused, _), (opt_plain, _) = fused.configure_optimizers()[0], plain.configure_optimizers()[0]
    for module in (fused, plain):
        for i, p in enumerate(module.fake_model.parameters()):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
    opt_fused.step(), opt_plain.step()
    for a, b in zip(params(plain.fake_model), params(fused.fake_model)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert tiny_distiller(fused_adam=None).speed.adam_options(torch.device("cpu")) == {}  # None: fused only on CUDA


def test_fused_adam_under_bf16_mixed_trains_and_clips():
    """The GPU recipe's combination (found on an H200 by benchmarks/gpu_check.sh): fused Adam, bf16-mixed and gradient
    clipping. Lightning's clip_gradients refuses a fused optimiser under mixed precision; the module clips itself
    (bf16 has no loss scale to undo), so it trains, and every step sees gradients of norm <= grad_clip."""
    clip, seen = 1e-3, []

    class StepNorms(Callback):
        def on_train_start(self, trainer, pl_module):
            for opt in trainer.optimizers:
                step = opt.step
                params = list(trainer.precision_plugin.main_params(opt))
                opt.step = lambda *a, step=step, params=params, **k: (
                    seen.append(total_grad_norm(params)),
                    step(*a, **k),
                )[1]

    module = unet_distiller(fused_adam=True, grad_clip=clip)
    gen = params(module.generator)
    trainer(4, callbacks=[StepNorms()], precision="bf16-mixed").fit(module, images())
    assert all(opt.defaults["fused"] for opt in module.trainer.optimizers)
    assert len(seen) == 4 and all(norm <= clip * (1 + 1e-4) for norm in seen), seen
    assert not any(torch.equal(a, b) for a, b in zip(gen, params(module.generator)))


def test_bad_options_are_refused():
    """noise_chunks < 1, a non-boolean fused_adam and fp16 loss scaling are one-line errors."""
    with pytest.raises(ConfigError, match=r"noise_chunks=0 must be >= 1"):
        tiny_distiller(noise_chunks=0)
    with pytest.raises(ConfigError, match=r"fused_adam='yes'"):
        tiny_distiller(fused_adam="yes")
    with pytest.raises(ConfigError, match=r"use precision='bf16-mixed'"):
        trainer(1, plugins=[MixedPrecision("16-mixed", "cpu")]).fit(tiny_distiller(), tiny_data())


def test_compile_compiles_the_three_networks_once(monkeypatch):
    """compile=True compiles generator, fake model and teacher in place (state_dict keys unchanged),
    and not again on a second fit."""
    compiled = []
    monkeypatch.setattr(
        torch.nn.Module,
        "compile",
        lambda net: (compiled.append(net), setattr(net, "_compiled_call_impl", net._call_impl)),
    )
    module = tiny_distiller(compile=True, fake_updates=1)
    keys = set(module.state_dict())
    trainer(1).fit(module, tiny_data())
    trainer(1).fit(module, tiny_data())
    assert [id(n) for n in compiled] == [id(module.generator.net), id(module.fake_model), id(module.teacher.net)]
    assert set(module.state_dict()) == keys


@pytest.mark.skipif(
    not os.environ.get("REALUID_TEST_COMPILE"),
    reason="torch.compile takes about a minute on a CPU; set REALUID_TEST_COMPILE=1",
)
def test_compiled_networks_train_like_eager():
    """With torch.compile (inductor) two iterations run, and the compiled loss and gradients equal eager mode's to
    round-off."""
    eager, compiled = tiny_distiller(fake_updates=1), tiny_distiller(fake_updates=1, compile=True)
    trainer(2).fit(compiled, tiny_data())
    assert compiled.fake_model._compiled_call_impl is not None and int(compiled.generator_updates) == 1
    eager.load_state_dict(compiled.state_dict())
    x1 = torch.randn(64, 2)
    (loss_a, grads_a), (loss_b, grads_b) = grads_and_loss(eager, x1), grads_and_loss(compiled, x1)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
