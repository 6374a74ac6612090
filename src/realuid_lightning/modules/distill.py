"""RealUID distillation: K fake-model updates, then one generator update (manual optimisation)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import (describe, instantiate, load_checkpoint, load_state_strict,
                                         network_from_checkpoint)
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import OneStepGenerator, time_of_noise_level
from realuid_lightning.losses import Parameterisation
from realuid_lightning.nets.unet import GANHead
from realuid_lightning.objective import Objective
from realuid_lightning.modules.base import GenerativeModule, lr_factor, split_batch, total_grad_norm
from realuid_lightning.modules.frozen_teacher import FrozenTeacherMixin
from realuid_lightning.modules.scaling import BF16Inference, ScalingMixin, check_scaling_options
from realuid_lightning.noise import Noise
from realuid_lightning.processes.base import Process
from realuid_lightning.nonfinite import NonFiniteGuard
from realuid_lightning.run_record import RunMetadata

# The frozen teacher stays in eval mode on purpose (no dropout, fixed normalisation statistics).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def _stacked(t: Tensor, xs: list[Tensor], cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(t, x, cond) for one network call over the concatenated batches ``xs`` that share t and cond."""
    n = len(xs)
    return torch.cat([t] * n), torch.cat(xs), None if cond is None else torch.cat([cond] * n)


def with_dropout(spec: Any, p: float) -> Any:
    """``spec`` with every ``dropout`` entry (init args, nested specs, a diffusers config) set to p."""
    if isinstance(spec, dict):
        return {k: p if k == "dropout" and isinstance(v, (int, float)) else with_dropout(v, p) for k, v in spec.items()}
    return [with_dropout(v, p) for v in spec] if isinstance(spec, list) else spec


def trainable(net: nn.Module, dropout: float) -> nn.Module:
    """``net`` in train mode with gradients, with p = ``dropout`` in every dropout layer (for any backbone)."""
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):  # nn.Dropout, Dropout1d/2d/3d, the alpha dropouts
            module.p = dropout
    return net.train().requires_grad_(True)


def fresh_network(spec: Any, teacher: nn.Module) -> nn.Module:
    """The teacher's architecture as its constructor builds it (``fake_init='scratch'``), from the teacher's spec."""
    if spec is None:
        raise ConfigError(f"fake_init='scratch' rebuilds the fake model from the teacher's network spec, but "
                          f"{type(teacher).__name__} has none (its init args are not stored as attributes); use "
                          "fake_init='teacher', or a network that keeps its init args as attributes")
    return instantiate(spec)


class RealUIDModule(ScalingMixin, FrozenTeacherMixin, GenerativeModule):
    """Distils a frozen teacher f* into a one-step generator G_θ with a fake model f (METHOD.md §2.3–2.4).

    Fake update (K times):  min_f α·E_gen||f − (β/α)c||² + (1 − α)·E_real||f − ((1 − β)/(1 − α))c||²,
    generator update:       min_θ α·E_gen[ ||f* − (β/α)c||² − ||f − (β/α)c||² ]  (f fixed),
    with the same x0 and t for the generated and real branches. α = β = 1 is UID (FGM / SiD) and never
    reads the real batch. ``alpha``, ``beta``, ``gamma``, ``parameterisation`` and the GAN weights configure
    the :class:`~realuid_lightning.objective.Objective` (General RealUID with ``gamma`` or 'beta'). A coupling process
    (METHOD.md §2.6) trains on pairs [x1, x0]: x0 is the batch's source in both branches, and G_θ(z, x0) sees it.

    The teacher comes from ``teacher_ckpt`` (a :class:`MatchingModule` checkpoint; its EMA
    ``teacher_ema`` weights by default) or is passed in as ``teacher`` with its ``process``. The
    generator is initialised from the teacher, or from a distillation checkpoint ``generator_ckpt`` (its
    EMA ``generator_ema`` weights) for the paper's fine-tuning stage; the fake model from scratch
    (``fake_init='scratch'``: the teacher's network as its constructor builds it, the paper's choice for
    training from scratch) or from the teacher (fine-tuning). ``dropout`` is the dropout of the generator and
    fake model (every dropout layer; the saved network spec says so too); the official code uses 0, whatever
    dropout the teacher trained with.
    ``final_lr_ratio`` < 1 decays both learning rates after the warm-up by a cosine to that fraction at the Trainer's
    ``max_steps`` (1, the paper's choice, keeps them constant). ``max_steps`` of the Trainer counts iterations: each is one fake or one generator update.
    The generator evaluates its network once at ``generator_time`` t_G (0 = pure noise for flows), or at
    the time where the noise level b_t/a_t equals ``generator_sigma`` (SiD uses σ_init = 2.5).

    Optional GAN loss (METHOD.md §2.7): with ``gan_generator_weight`` λ_G or ``gan_discriminator_weight``
    λ_D > 0, a :class:`GANHead` on the fake model's bottleneck discriminates x_t of generated and real
    data at t ~ U[gan_time_min, 1]; λ_D·L_D^adv joins the fake loss and λ_G·L_G^adv the generator loss.
    DDP (``strategy='realuid_ddp'``), ``noise_chunks`` and the speed options: :mod:`~realuid_lightning.modules.scaling`.
    """

    role = "student"
    network_prefix = "generator.net"

    def __init__(
        self,
        teacher_ckpt: str | None = None,
        teacher: nn.Module | None = None,
        process: Process | None = None,
        teacher_ema: float | None = 0.999,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float | None = None,
        parameterisation: Parameterisation = "standard",
        fake_updates: int = 5,
        generator_lr: float = 3e-5,
        fake_lr: float = 3e-5,
        adam_betas: tuple[float, float] = (0.0, 0.999),
        warmup_steps: int = 500,
        final_lr_ratio: float = 1.0,
        grad_clip: float = 1.0,
        fake_init: Literal["scratch", "teacher"] = "scratch",
        dropout: float = 0.0,
        generator_time: float = 0.0,
        generator_sigma: float | None = None,
        gan_generator_weight: float = 0.0,
        gan_discriminator_weight: float = 0.0,
        gan_time_min: float = 0.8,
        generator_ckpt: str | None = None,
        generator_ema: float | None = 0.999,
        max_nonfinite: int = 10,
        noise_chunks: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
        fused_adam: bool | None = False,
        teacher_bf16: bool = False,
    ) -> None:
        super().__init__(noise_chunks)
        self.nonfinite = NonFiniteGuard(max_nonfinite)  # skip non-finite updates, stop after max_nonfinite in a row
        self.objective = Objective(alpha, beta, gamma, parameterisation, gan_generator_weight, gan_discriminator_weight)
        check_scaling_options(fused_adam)
        if fake_init not in ("scratch", "teacher"):
            raise ConfigError(f"fake_init={fake_init!r} is not supported; choose 'scratch' or 'teacher'")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout} is out of range; it must lie in [0, 1) (the official code uses 0)")
        if not 0.0 <= final_lr_ratio <= 1.0:
            raise ConfigError(f"final_lr_ratio={final_lr_ratio} must lie in [0, 1] (1 keeps the learning rates constant)")
        if fake_updates < 1:
            raise ConfigError(f"fake_updates={fake_updates} must be >= 1 (the paper uses K = 5)")
        if not 0 <= gan_time_min < 1:
            raise ConfigError(f"gan_time_min={gan_time_min} must lie in [0, 1)")
        if min(generator_lr, fake_lr) <= 0 or grad_clip < 0 or warmup_steps < 0:
            raise ConfigError(f"learning rates must be > 0 and grad_clip, warmup_steps >= 0 (got generator_lr={generator_lr}, "
                              f"fake_lr={fake_lr}, grad_clip={grad_clip}, warmup_steps={warmup_steps})")
        teacher, process, net_spec = self.resolve_teacher(teacher_ckpt, teacher, process, teacher_ema)
        self.process = process
        if generator_sigma is not None:  # e.g. SiD's σ_init = 2.5 for a diffusion teacher
            generator_time = time_of_noise_level(process, generator_sigma)
        self.generator = OneStepGenerator(trainable(copy.deepcopy(teacher), dropout), process, generator_time)
        net_spec = with_dropout(net_spec, dropout)
        fake = copy.deepcopy(teacher) if fake_init == "teacher" else fresh_network(net_spec, teacher)
        self.fake_model = trainable(fake, dropout)
        if generator_ckpt is not None:  # fine-tuning: start from a distilled generator (its EMA weights by default)
            ckpt = load_checkpoint(generator_ckpt, what="generator_ckpt")
            distilled = network_from_checkpoint(ckpt, generator_ema, f"generator_ckpt {generator_ckpt!r}")[0]
            load_state_strict(self.generator.net, distilled.state_dict(), f"generator_ckpt {generator_ckpt!r}")
        self.teacher = (BF16Inference(teacher) if teacher_bf16 else teacher).requires_grad_(False).eval()
        self.gan_head = self._make_gan_head() if self.objective.uses_gan else None
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.register_buffer("generator_updates", torch.zeros((), dtype=torch.long))
        self.save_hyperparameters(ignore=["teacher", "process"])
        self.net_spec, self.process_spec = net_spec, describe(process, "process")
        self.automatic_optimization = False

    def _make_gan_head(self) -> GANHead:
        if not hasattr(self.fake_model, "bottleneck"):
            raise ConfigError(f"the GAN loss needs a network with bottleneck features (e.g. realuid_lightning.nets.UNet); "
                              f"got {type(self.fake_model).__name__}")
        return GANHead(self.fake_model.bottleneck_channels, getattr(self.fake_model, "norm_num_groups", 32))

    # ---- what the EMA callback and sampling see ------------------------------------------------
    @property
    def ema_network(self) -> nn.Module:
        return self.generator.net

    @property
    def ema_version(self) -> int:
        return int(self.generator_updates)

    def run_record(self) -> RunMetadata:
        """The base record, with the generator time t_G and the teacher's fingerprint."""
        return replace(super().run_record(), generator_time=self.generator.time,
                       teacher_fingerprint=self.teacher_fingerprint())

    def restore_run_record(self, record: RunMetadata) -> None:
        """The base restore; a checkpoint trained with other teacher weights is refused."""
        super().restore_run_record(record)
        self.check_teacher_fingerprint(record.teacher_fingerprint)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
        """One step: x1 = G_θ(z), z ~ N(0, I) (G_θ(z, x0) with the sources x0 as cond for a coupling process)."""
        return self.generator(self.source_noise(num, generator), self.sampling_cond(num, cond))

    # ---- the game ------------------------------------------------------------------------------
    @property
    def uses_real_data(self) -> bool:
        """Whether a fake update reads the real batch (the objective's choice)."""
        return self.objective.uses_real_data

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x1_real, cond = split_batch(batch)
        self.record_batch(x1_real, cond)
        generator_turn = int(self.iteration) % (self.hparams.fake_updates + 1) == self.hparams.fake_updates
        (opt_fake, opt_gen), (sched_fake, sched_gen) = self.optimizers(), self.lr_schedulers()
        opt, sched, net, name = (opt_gen, sched_gen, self.generator, "generator") if generator_turn else (opt_fake, sched_fake, self.fake_model, "fake")
        with self.toggled_optimizer(opt):
            loss = self._generator_loss(x1_real, cond) if generator_turn else self._fake_loss(x1_real, cond)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            grad_norm = total_grad_norm(net.parameters())
            stepped = self.nonfinite.check(self, loss, grad_norm, opt, name=name)
            if stepped:
                self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip or None, gradient_clip_algorithm="norm")
                opt.step()
                sched.step()
        self.iteration += 1
        self.generator_updates += int(generator_turn and stepped)
        self.log(f"train/{name}_loss", loss.detach(), prog_bar=True)
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # Lightning writes logs only there: skip the cost
            self.log_dict({f"train/{name}_grad_norm": grad_norm, "train/generator_updates": self.generator_updates.float()}, prog_bar=True)

    def _fake_loss(self, x1_real: Tensor, cond: Tensor | None) -> Tensor:
        """The objective's fake loss on a fresh generated batch and, when used, the real batch (one forward pass)."""
        noise = self.update_noise()
        with torch.no_grad():
            x1_gen = self.generator(noise.randn_like(x1_real), cond)
        x0 = self.process.source(x1_gen, cond, noise)
        t = noise.time(self.process, x1_gen.shape[0], x1_gen.device)
        x1s = [x1_gen, x1_real] if self.uses_real_data else [x1_gen]
        branches = [self.process.sample(x0, x1, t, noise) for x1 in x1s]
        t_all, x_all, cond_all = _stacked(t, [b.x_t for b in branches], cond)
        fake = self.trained("fake_model")(t_all, x_all, cond_all)
        with torch.no_grad():
            teacher = self.teacher(t_all, x_all, cond_all) if self.objective.fake_reads_teacher else None
        head = self.trained("gan_head") if self.gan_head is not None else None
        logits = None if head is None else self._gan_logits([x1_gen, x1_real], x0, cond, noise, head)
        return self.objective.fake_loss(branches, fake, teacher, logits).mean()

    def _generator_loss(self, x1_real: Tensor, cond: Tensor | None) -> Tensor:
        """The objective's generator loss on a generated batch; the real batch only gives shape and conditioning."""
        noise = self.update_noise()
        x1_gen = self.trained("generator")(noise.randn_like(x1_real), cond)
        x0 = self.process.source(x1_gen, cond, noise)
        t = noise.time(self.process, x1_gen.shape[0], x1_gen.device)
        gen = self.process.sample(x0, x1_gen, t, noise)
        teacher_gen, fake_gen = self.teacher(t, gen.x_t, cond), self.fake_model(t, gen.x_t, cond)
        logits = None if self.gan_head is None else self._gan_logits([x1_gen], x0, cond, noise, self.gan_head)
        return self.objective.generator_loss(gen, teacher_gen, fake_gen, logits).mean()

    def _gan_logits(self, x1s: list[Tensor], x0: Tensor, cond: Tensor | None, noise: Noise, head: nn.Module) -> Tensor:
        """D(x_t) = head(fake_model.bottleneck(t, x_t)) at t ~ U[gan_time_min, 1] near the data, for each batch in x1s."""
        t_min = self.hparams.gan_time_min
        t = t_min + (1 - t_min) * noise.rand(x0.shape[0], x0)
        t_all, x_all, cond_all = _stacked(t, [self.process.sample(x0, x1, t, noise).x_t for x1 in x1s], cond)
        return head(self.fake_model.bottleneck(t_all, x_all, cond_all))

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        fake_params = [*self.fake_model.parameters(), *(self.gan_head.parameters() if self.gan_head is not None else [])]
        opts = [torch.optim.Adam(params, lr=lr, betas=tuple(hp.adam_betas), **self.adam_options())
                for params, lr in ((fake_params, hp.fake_lr), (self.generator.parameters(), hp.generator_lr))]
        k, iterations = hp.fake_updates, self.trainer.max_steps if self._trainer is not None else -1
        totals = (iterations * k // (k + 1), iterations // (k + 1)) if iterations > 0 else (None, None)
        if totals[0] is None and hp.final_lr_ratio < 1:
            raise ConfigError(f"final_lr_ratio={hp.final_lr_ratio} decays over the run: set the Trainer's max_steps")
        scheds = [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, lr_factor(hp.warmup_steps, total, hp.final_lr_ratio)),
                   "name": f"lr/{n}"} for o, n, total in zip(opts, ("fake", "generator"), totals)]
        return opts, scheds
