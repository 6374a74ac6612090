import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from helpers import StopAt, UserNet, assert_same_run, ema, tiny_data, tiny_distiller, tiny_teacher, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from realuid_lightning import (
    EMA,
    MLP,
    FewStepGenerator,
    FlowMatching,
    GeneratorOptions,
    OneStepGenerator,
    RealUIDModule,
    TeacherOptions,
)
from realuid_lightning.checkpoint import instantiate
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets import UNet
from realuid_lightning.nets.diffusers import DiffusersUNet
from realuid_lightning.nets.precond import EDMPrecond
from realuid_lightning.nets.torchcfm import TorchCFMUNet
from realuid_lightning.processes import EDM


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_updates_touch_only_their_network():
    """A fake update changes only the fake model; a generator update changes only the generator;
    the teacher never changes."""
    module = tiny_distiller(fake_updates=1)
    teacher, gen, fake = params(module.teacher), params(module.generator), params(module.fake_model)
    trainer(1).fit(module, tiny_data())
    assert same(params(module.generator), gen) and not same(params(module.fake_model), fake)
    fake_after_1 = params(module.fake_model)
    trainer(1).fit(module, tiny_data())  # a new Trainer runs one more iteration; the module's counter goes on
    assert same(params(module.fake_model), fake_after_1) and not same(params(module.generator), gen)
    assert same(params(module.teacher), teacher)
    assert int(module.iteration) == 2 and int(module.generator_updates) == 1


def test_cadence_k_fake_then_one_generator():
    """With K = 3, iterations 0–2 update the fake model and iteration 3 the generator."""
    module = tiny_distiller(fake_updates=3)
    gen = params(module.generator)
    trainer(3).fit(module, tiny_data())
    assert same(params(module.generator), gen) and int(module.generator_updates) == 0
    trainer(1).fit(module, tiny_data())
    assert not same(params(module.generator), gen) and int(module.generator_updates) == 1


def test_fake_warmup_updates_the_fake_model_alone_then_alternates():
    """With W = 4 and K = 2, iterations 0–3 update only the fake model (the generator stays bit for bit as it
    started), then the cadence resumes from there: iterations 4, 5 fake, 6 generator; the fake model's decay
    schedule spans W + 2/3 of the rest."""
    module = tiny_distiller(fake_updates=2, fake_warmup=4, final_lr_ratio=0.5, warmup_steps=1)
    turns = [module.optimisation.generator_turn(k) for k in range(10)]
    assert turns == [False] * 6 + [True, False, False, True]
    gen, fake = params(module.generator), params(module.fake_model)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *unused):
            seen.append((same(params(pl_module.generator), gen), same(params(pl_module.fake_model), fake)))

    trainer(7, callbacks=[Record()]).fit(module, tiny_data())
    assert seen == [(True, False)] * 6 + [(False, False)] and int(module.generator_updates) == 1
    # 13 iterations: W = 4 and 9 more, of which 6 fake and 3 generator updates; each cosine ends at its own total
    _, scheds = module.optimisation.optimisers(fake, gen, 13, {})
    (fake_factor,), (gen_factor,) = (s["scheduler"].lr_lambdas for s in scheds)
    assert fake_factor(9) > 0.5 and fake_factor(10) == 0.5 and gen_factor(2) > 0.5 and gen_factor(3) == 0.5


def test_fake_warmup_must_leave_generator_updates():
    with pytest.raises(ValueError, match=r"fake_warmup=-1 must be >= 0"):
        tiny_distiller(fake_warmup=-1)
    message = r"fake_warmup=8 leaves no generator update in max_steps=13 \(at K = 5 it needs max_steps >= 14\)"
    with pytest.raises(ValueError, match=message):
        trainer(13).fit(tiny_distiller(fake_warmup=8), tiny_data())
    with pytest.raises(ValueError, match=r"fake_warmup=8 leaves no generator update in max_steps=5 "):
        trainer(5).fit(tiny_distiller(fake_warmup=8), tiny_data())


def test_fine_tuning_stage_restarts_the_fake_model_optimisers_and_learning_rates():
    """fine_tune_at = 7 with K = 2: iterations 0–6 alternate F F G, then the cycle restarts at 7 (F F G from there,
    so 8 is a fake update where one run would update the generator). At iteration 7 the fake model steps from the
    teacher's weights with a fresh Adam state, and the generator's next update is its Adam's first; each network's
    learning rate warms up and decays again over its fine-tuning updates at fine_tune_lr_ratio times its values."""
    module = tiny_distiller(
        fake_updates=2, fine_tune_at=7, fine_tune_lr_ratio=0.5, final_lr_ratio=0.1, warmup_steps=1, fake_init="scratch"
    )
    turns = [module.optimisation.generator_turn(k, 13) for k in range(13)]
    assert turns == [False, False, True] * 2 + [False] + [False, False, True] * 2
    assert module.optimisation.stage_counts(13) == [(5, 2), (4, 2)], "iteration 6 ends a cut cycle: a fake update"
    teacher, seen = params(module.teacher), {}

    class Record(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            k = int(pl_module.iteration)
            steps = [int(s["step"]) for opt in trainer.optimizers for s in opt.state.values() if s]
            seen[k] = (same(params(pl_module.fake_model), teacher), steps)

    trainer(13, callbacks=[Record()]).fit(module, tiny_data())
    assert not seen[6][0] and seen[7][0], "the fake model takes the teacher's weights at iteration 7, not before"
    # Adam steps held before each update: (fake, generator) 4 and 2 before 6, none before 7, fake 2 and none before 9
    assert set(seen[6][1]) == {4, 2} and seen[7][1] == [] and set(seen[9][1]) == {2}
    assert int(module.generator_updates) == 4
    # stage 1: 5 fake and 2 generator updates; stage 2: 4 and 2; each schedule ends a stage at 0.1 and restarts at 0.5
    (fake_factor,), (gen_factor,) = (s.lr_lambdas for s in module.lr_schedulers())
    assert fake_factor(4) > 0.1 and [fake_factor(5), fake_factor(6), fake_factor(9)] == [0.5, 0.5, 0.05]
    assert gen_factor(1) == 1.0 and [gen_factor(2), gen_factor(4)] == [0.5, 0.05]


def test_fine_tuning_stage_takes_its_own_fake_updates():
    """fine_tune_fake_updates = K' = 2 after K = 1: iterations 0–5 alternate F G, then F F G from 6; each stage's
    schedule counts its own updates, a run makes the generator updates the turns give, and K' without a stage or
    below 1 stops at construction in one line."""
    module = tiny_distiller(fake_updates=1, fine_tune_at=6, fine_tune_fake_updates=2, reuse_generated=True)
    turns = [module.optimisation.generator_turn(k, 15) for k in range(15)]
    assert turns == [False, True] * 3 + [False, False, True] * 3
    assert module.optimisation.stage_counts(15) == [(3, 3), (6, 3)]
    assert [k for k in range(15) if turns[k] and module.optimisation.keeps_generated(k, 15)] == [1, 3, 8, 11]
    trainer(15).fit(module, tiny_data())
    assert int(module.generator_updates) == 6
    with pytest.raises(ValueError, match=r"fine_tune_fake_updates=2 must be >= 1 and needs fine_tune_at \(got 0\)"):
        tiny_distiller(fine_tune_fake_updates=2)
    with pytest.raises(ValueError, match=r"fine_tune_fake_updates=0 must be >= 1"):
        tiny_distiller(fine_tune_at=4, fine_tune_fake_updates=0)


def test_fine_tuning_stage_restarts_the_generator_from_its_ema():
    """fine_tune_ema = 0.9: at the stage's start the generator takes the EMA callback's 0.9 average (then steps on
    from it); without an EMA callback that keeps 0.9 the run stops at its start, in one line."""
    seen = {}

    class Record(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if int(pl_module.iteration) == 7:
                ema_callback = next(c for c in trainer.callbacks if isinstance(c, EMA))
                seen["generator"] = params(pl_module.generator.net)
                seen["average"] = [v.clone() for v in ema_callback.averages["0.9"].values()]

    module = tiny_distiller(fake_updates=2, fine_tune_at=7, fine_tune_ema=0.9)
    trainer(10, callbacks=[EMA([0.9, 0.99]), Record()]).fit(module, tiny_data())
    assert same(seen["generator"], seen["average"]), "the generator holds the 0.9 average at the stage's start"
    with pytest.raises(ValueError, match=r"fine_tune_ema=0.5 restarts the generator from its EMA: add the EMA"):
        trainer(10, callbacks=[EMA([0.9])]).fit(
            tiny_distiller(fake_updates=2, fine_tune_at=7, fine_tune_ema=0.5), tiny_data()
        )
    with pytest.raises(ValueError, match=r"fine_tune_ema=0.9 must be an EMA decay in \(0, 1\) and needs fine_tune_at"):
        tiny_distiller(fine_tune_ema=0.9)


def test_fine_tuning_stage_must_fit_the_run():
    """fine_tune_at and its ratio out of range, or a stage left without a generator update, stop the run in one line."""
    with pytest.raises(ValueError, match=r"fine_tune_at=1.5 must be an iteration >= 0 or a share of max_steps in"):
        tiny_distiller(fine_tune_at=1.5)
    with pytest.raises(ValueError, match=r"fine_tune_lr_ratio=0.0 must be > 0"):
        tiny_distiller(fine_tune_at=4, fine_tune_lr_ratio=0.0)
    message = (
        r"fine_tune_at=0.9 starts the fine-tuning stage at iteration 9 of max_steps=10, leaving a stage without a "
        r"generator update \(at K = 2 and fake_warmup = 0: >= 3 iterations before it, >= 3 after\)"
    )
    with pytest.raises(ValueError, match=message):
        trainer(10).fit(tiny_distiller(fake_updates=2, fine_tune_at=0.9), tiny_data())
    with pytest.raises(ValueError, match=r"fine_tune_at=2 starts the fine-tuning stage at iteration 2 of max_steps=10"):
        trainer(10).fit(tiny_distiller(fake_updates=2, fine_tune_at=2), tiny_data())
    with pytest.raises(ValueError, match=r"fine_tune_at=4 restarts the learning rates .* set the Trainer's max_steps"):
        trainer(-1, max_epochs=1).fit(tiny_distiller(fine_tune_at=4), tiny_data())


def test_teacher_frozen_and_out_of_optimisers_and_checkpoints(tmp_path):
    """The teacher has no trainable parameter, is in no optimiser, stays in eval mode, and is not saved."""
    module = tiny_distiller()
    t = trainer(2, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    t.fit(module, tiny_data())
    teacher_ids = {id(p) for p in module.teacher.parameters()}
    assert not any(p.requires_grad for p in module.teacher.parameters()) and not module.teacher.training
    assert all(id(p) not in teacher_ids for opt in t.optimizers for g in opt.param_groups for p in g["params"])
    assert module.generator.training and module.fake_model.training
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)


def test_uid_never_reads_real_data():
    """α = β = 1: a batch of NaNs leaves both losses finite (only its shape is used)."""
    module = tiny_distiller(alpha=1.0, beta=1.0)
    nan = torch.full((16, 2), float("nan"))
    assert torch.isfinite(module._fake_loss(nan, None)) and torch.isfinite(module._generator_loss(nan, None))
    module = tiny_distiller(alpha=0.94, beta=0.9588)
    assert torch.isnan(module._fake_loss(nan, None))


@pytest.mark.parametrize("kwargs", [{}, {"gamma": 0.97}, {"parameterisation": "beta"}])
def test_fake_step_lowers_its_loss(kwargs):
    """One Adam step on the fake model lowers its loss on a fixed batch and fixed noise."""
    module = tiny_distiller(**kwargs)
    batch = torch.randn(128, 2) * 3
    opt = torch.optim.Adam(module.fake_model.parameters(), lr=3e-3)

    def loss():
        torch.manual_seed(0)
        return module._fake_loss(batch, None)

    before = loss()
    before.backward()
    opt.step()
    assert loss().item() < before.item()


def test_generator_gradient_vanishes_at_equilibrium():
    """Fake model = teacher (the optimum when the generator matches the data): the generator gradient is zero."""
    module = tiny_distiller(fake_init="teacher")
    module._generator_loss(torch.zeros(256, 2), None).backward()
    assert all(p.grad is None or p.grad.abs().max() < 1e-6 for p in module.generator.parameters())


def test_fake_init_from_scratch_differs_from_teacher():
    """fake_init='scratch' re-initialises the fake model; the generator starts as the teacher."""
    module = tiny_distiller(fake_init="scratch")
    assert not same(params(module.fake_model), params(module.teacher))
    assert same(params(module.generator.net), params(module.teacher))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"generator_times": [0.0, 0.25, 0.5, 0.75], "student_steps": [1, 2, 4]},
        {"generator_times": [0.0, 0.25, 0.5, 0.75], "student_steps": [1, 2, 4], "fake_per_step": True},
        {"fine_tune_at": 6, "fine_tune_lr_ratio": 0.3, "final_lr_ratio": 0.1, "fine_tune_ema": 0.9},
        {"fine_tune_at": 0.5, "fine_tune_lr_ratio": 0.3, "final_lr_ratio": 0.1},
    ],
    ids=["one_step", "few_step", "few_step_fake_per_step", "fine_tune_at_the_resume", "fine_tune_after_it"],
)
def test_resume_is_bit_identical(options, tmp_path):
    """Stopping after 6 iterations (mid-epoch: 8 batches an epoch) and resuming to 14 gives the same generator,
    fake model, EMA and counters (a one-step and a shared 1/2/4-step student, with one fake model and with one per
    step path; a fine-tuning stage that starts at the resumed iteration 6, the generator from its EMA, or at 7)."""
    pl.seed_everything(0)
    full_ema = ema()
    full = tiny_distiller(fake_updates=2, **options)
    trainer(14, callbacks=[full_ema]).fit(full, tiny_data(num_train=512))

    pl.seed_everything(0)
    first = tiny_distiller(fake_updates=2, **options)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    trainer(14, tmp_path, callbacks=[ema(), StopAt(6), ckpt]).fit(first, tiny_data(num_train=512))

    pl.seed_everything(123)  # a different global seed: everything must come from the checkpoint
    resumed_ema = ema()
    resumed = tiny_distiller(fake_updates=2, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(14, tmp_path, callbacks=[resumed_ema]).fit(
            resumed, tiny_data(num_train=512), ckpt_path=str(tmp_path / "epoch=0-step=6.ckpt")
        )
    assert not [w for w in caught if "not resumable" in str(w.message)]  # the loader resumes exactly, and says so

    assert_same_run(resumed, full, resumed_ema, full_ema, updates=4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 1.2}, r"alpha=1.2 is out of range; it must lie in \(0, 1\]"),
        ({"beta": 0.0}, r"beta=0.0 is out of range"),
        ({"alpha": 1.0, "beta": 0.98}, r"alpha=1 requires beta=1"),
        ({"gamma": 1.5}, r"gamma=1.5 is out of range"),
        ({"parameterisation": "gamma"}, r"parameterisation='gamma' .*'standard' or 'beta'"),
        ({"fake_updates": 0}, r"fake_updates=0 must be >= 1"),
        ({"fake_init": "random"}, r"fake_init='random'"),
        ({"dropout": 1.0}, r"dropout=1.0 is out of range; it must lie in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout=-0.1 is out of range"),
        ({"final_lr_ratio": 1.5}, r"final_lr_ratio=1.5 must lie in \[0, 1\]"),
        ({"gan_discriminator_weight": -1.0}, r"GAN weights must be >= 0 \(.*gan_discriminator_weight=-1.0\)"),
        ({"gan_time_min": 1.0}, r"gan_time_min=1.0 must lie in \[0, 1\)"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    """Out-of-range hyperparameters raise one clear error naming the value and the allowed range."""
    with pytest.raises(ValueError, match=match):
        tiny_distiller(**kwargs)


def test_teacher_source_must_be_unique():
    """Exactly one of teacher_ckpt / teacher is required."""
    with pytest.raises(ValueError, match="exactly one of teacher_ckpt"):
        RealUIDModule()
    with pytest.raises(ValueError, match="needs its process"):
        RealUIDModule(TeacherOptions(net=tiny_teacher().net))


def test_resume_with_another_teacher_is_refused(tmp_path):
    """The teacher is not saved, only its fingerprint: resuming with different teacher weights fails clearly."""
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(2, tmp_path, callbacks=[ckpt]).fit(tiny_distiller(), tiny_data())
    with pytest.raises(ValueError, match="teacher .* differs from the one"):
        trainer(4, tmp_path).fit(tiny_distiller(seed=5), tiny_data(), ckpt_path=str(tmp_path / "last.ckpt"))


def test_fine_tuning_starts_from_a_distilled_generator(tmp_path):
    """generator_ckpt loads a distillation checkpoint's generator (raw or EMA weights) into a new run."""
    first, averages = tiny_distiller(fake_updates=1), ema()
    trainer(4, tmp_path, callbacks=[averages, ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(
        first, tiny_data()
    )
    teacher = tiny_teacher()
    source = TeacherOptions(net=teacher.net, process=teacher.process)
    ckpt = str(tmp_path / "last.ckpt")
    raw = RealUIDModule(
        source, generator=GeneratorOptions(generator_ckpt=ckpt, generator_ema=None, fake_init="teacher")
    )
    assert same(params(raw.generator), params(first.generator))
    smooth = RealUIDModule(source, generator=GeneratorOptions(generator_ckpt=ckpt, generator_ema=0.9))
    assert all(torch.equal(smooth.generator.net.state_dict()[k], v) for k, v in averages.averages["0.9"].items())


def test_fake_model_can_start_from_the_distilled_fake_model(tmp_path):
    """fake_init 'generator_ckpt' starts the fake model as generator_ckpt's (its raw weights, not the teacher's or a
    fresh network's); in a per-step list only the fake models that ask for it; without generator_ckpt, one line."""
    first = tiny_distiller(fake_updates=1)
    trainer(4, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(first, tiny_data())
    teacher = tiny_teacher()
    source, ckpt = TeacherOptions(net=teacher.net, process=teacher.process), str(tmp_path / "last.ckpt")
    kept = RealUIDModule(
        source, generator=GeneratorOptions(generator_ckpt=ckpt, generator_ema=None, fake_init="generator_ckpt")
    )
    assert same(params(kept.fake_model), params(first.fake_model))
    assert not same(params(first.fake_model), params(teacher.net))
    per_step = GeneratorOptions(
        generator_times=[0.0, 0.5],
        generator_ckpt=ckpt,
        generator_ema=None,
        fake_per_step=True,
        fake_init=["generator_ckpt", "teacher"],
    )
    grown = RealUIDModule(source, generator=per_step).fake_model.models
    assert same(params(grown[0]), params(first.fake_model)) and same(params(grown[1]), params(teacher.net))
    with pytest.raises(ConfigError, match="fake_init='generator_ckpt' starts a fake model from generator_ckpt's"):
        GeneratorOptions(fake_init="generator_ckpt")
    per_step_run = tiny_distiller(fake_updates=1, generator_times=[0.0, 0.5], fake_per_step=True)
    trainer(2, tmp_path / "per_step", callbacks=[ModelCheckpoint(dirpath=tmp_path / "per_step", save_last=True)]).fit(
        per_step_run, tiny_data()
    )
    options = GeneratorOptions(
        generator_ckpt=str(tmp_path / "per_step" / "last.ckpt"), generator_ema=None, fake_init="generator_ckpt"
    )
    with pytest.raises(ConfigError, match="'s fake model does not match the network architecture"):
        RealUIDModule(source, generator=options)


# ---- the networks RealUID builds from the teacher ---------------------------------------------------------
DIFFUSERS_CONFIG = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4,
)
BACKBONES = {  # name: dropout -> (network, its process, its data shape)
    "MLP": lambda p: (MLP(dim=2, hidden=32, depth=2, time_dim=8), FlowMatching(), (2,)),
    "UNet": lambda p: (UNet(8, 1, (8, 16), 1, (), 8, dropout=p, norm_num_groups=8), FlowMatching(), (1, 8, 8)),
    "TorchCFMUNet": lambda p: (
        TorchCFMUNet(
            dim=(1, 8, 8),
            num_channels=32,
            num_res_blocks=1,
            channel_mult=(1, 2),
            attention_resolutions="4",
            num_heads=2,
            num_head_channels=16,
            dropout=p,
        ),
        FlowMatching(),
        (1, 8, 8),
    ),
    "DiffusersUNet": lambda p: (DiffusersUNet({**DIFFUSERS_CONFIG, "dropout": p}), FlowMatching(), (1, 8, 8)),
    "EDMPrecond": lambda p: (
        EDMPrecond(UNet(8, 1, (8, 16), 1, (), 8, dropout=p, norm_num_groups=8), EDM()),
        EDM(),
        (1, 8, 8),
    ),
}
WITH_DROPOUT = [name for name in BACKBONES if name != "MLP"]


def trained_teacher(name, dropout=0.0, seed=0):
    """A backbone whose weights moved away from their initialisation, as a trained teacher's have."""
    torch.manual_seed(seed)
    net, process, shape = BACKBONES[name](dropout)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net, process, shape


def dropout_rates(net):
    return [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_distilled_networks_have_no_dropout_by_default(name):
    """A teacher trained with dropout 0.1 gives a generator and fake model with dropout 0 (also in the saved spec):
    in train mode G(z) is deterministic."""
    teacher, process, shape = trained_teacher(name, dropout=0.1)
    assert 0.1 in dropout_rates(teacher)
    module = RealUIDModule(TeacherOptions(net=teacher, process=process)).train()
    for net in (module.generator, module.fake_model, instantiate(module.run_record().net)):
        assert dropout_rates(net) and set(dropout_rates(net)) == {0.0}
    z = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(module.generator(z), module.generator(z))


def test_dropout_option_is_honoured():
    """dropout=0.3 sets every dropout layer of both trained networks and the saved spec; G(z) varies in train mode."""
    teacher, process, shape = trained_teacher("UNet")
    module = RealUIDModule(TeacherOptions(net=teacher, process=process), generator=GeneratorOptions(dropout=0.3))
    module.train()
    assert set(dropout_rates(module.generator)) == set(dropout_rates(module.fake_model)) == {0.3}
    assert module.run_record().net["init_args"]["dropout"] == 0.3 and set(dropout_rates(teacher)) == {0.0}
    z = torch.randn(4, *shape)
    with torch.no_grad():
        assert not torch.equal(module.generator(z), module.generator(z))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_fake_from_scratch_is_a_freshly_built_network(name):
    """fake_init='scratch' is the network as its constructor builds it (torchcfm's outputs 0), not a reset teacher."""
    teacher, process, shape = trained_teacher(name)
    torch.manual_seed(1)
    module = RealUIDModule(
        TeacherOptions(net=teacher, process=process), generator=GeneratorOptions(fake_init="scratch")
    )
    torch.manual_seed(1)
    fresh = BACKBONES[name](0.0)[0]
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in module.fake_model.state_dict().items())
    if name == "TorchCFMUNet":  # its output layers start at zero
        assert not module.fake_model(torch.rand(3), torch.randn(3, *shape)).any()


def test_fake_from_scratch_needs_a_network_spec():
    """A teacher that does not keep its init args cannot be rebuilt from scratch: one line saying what to do."""
    with pytest.raises(ConfigError, match=r"fake_init='scratch' .* UserNet has none .* use fake_init='teacher'"):
        RealUIDModule(TeacherOptions(net=UserNet(), process=FlowMatching()))
    RealUIDModule(
        TeacherOptions(net=UserNet(), process=FlowMatching()), generator=GeneratorOptions(fake_init="teacher")
    )


@pytest.mark.parametrize("prediction,time", [("x0", 0.0), ("x1", 1.0)])
def test_singular_generator_time_is_refused(prediction, time):
    """Flow matching reads no data from an x0-prediction at t_G = 0 (a = 0) or an x1-prediction at t_G = 1 (b = 0);
    a time outside the process's range [t_min, t_max], first or later in a schedule, is refused too."""
    match = rf"generator_time={time}: FlowMatching with prediction='{prediction}' has no data estimate there"
    with pytest.raises(ConfigError, match=match):
        OneStepGenerator(MLP(), FlowMatching(prediction=prediction), time)
    with pytest.raises(ConfigError, match=r"or a teacher predicting one of \['velocity', .*'v'\]"):
        RealUIDModule(
            TeacherOptions(net=MLP(), process=FlowMatching(prediction=prediction)),
            generator=GeneratorOptions(generator_time=time),
        )
    with pytest.raises(ConfigError, match=r"generator_time=1.2 is outside FlowMatching's time range \[0, 1\]"):
        OneStepGenerator(MLP(), FlowMatching(prediction=prediction), 1.2)
    with pytest.raises(ConfigError, match=r"generator_time=-0.1 is outside FlowMatching's time range \[0, 1\]"):
        FewStepGenerator(MLP(), FlowMatching(prediction=prediction), [[-0.1, 0.5]])
    z = torch.randn(5, 2)
    assert torch.isfinite(OneStepGenerator(MLP(), FlowMatching(prediction=prediction), 0.5)(z)).all()
    assert torch.isfinite(OneStepGenerator(MLP(), FlowMatching(), time)(z)).all()


def test_final_lr_ratio_decays_both_learning_rates_by_a_cosine_to_the_ratio():
    """After the warm-up each optimiser's lr follows r + (1 − r)(1 + cos πu)/2 over its own updates, ending at r·lr."""
    module = tiny_distiller(fake_updates=2, warmup_steps=2, final_lr_ratio=0.1, generator_lr=1e-3, fake_lr=2e-3)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *unused):
            seen.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])

    trainer(24, callbacks=[Record()]).fit(module, tiny_data())
    fake_total, gen_total = 16, 8  # 24 iterations at K = 2: 16 fake and 8 generator updates
    factor = lambda k, total: (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (k - 2) / (total - 2)))) if k >= 2 else (k + 1) / 2
    )
    fake_lrs = [lrs[0] for i, lrs in enumerate(seen) if i % 3 != 2]
    gen_lrs = [lrs[1] for i, lrs in enumerate(seen) if i % 3 == 2]
    assert fake_lrs == pytest.approx([2e-3 * factor(k + 1, fake_total) for k in range(fake_total)])
    assert gen_lrs == pytest.approx([1e-3 * factor(k + 1, gen_total) for k in range(gen_total)])
    assert gen_lrs[-1] == pytest.approx(1e-4) and fake_lrs[-1] == pytest.approx(2e-4)


def test_final_lr_ratio_needs_max_steps():
    with pytest.raises(ValueError, match=r"final_lr_ratio=0.5 decays over the run: set the Trainer's max_steps"):
        trainer(-1, max_epochs=1).fit(tiny_distiller(final_lr_ratio=0.5), tiny_data())
