"""RealUID distillation: K fake-model updates, then one generator update (manual optimisation)."""

from __future__ import annotations

import warnings
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import describe
from realuid_lightning.distributed import RealUIDDDPStrategy, check_strategy
from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.base import GenerativeModule, split_batch, total_grad_norm
from realuid_lightning.modules.frozen_teacher import FrozenTeacher, LoadedTeacher, TeacherOptions
from realuid_lightning.modules.generated import Draw, GeneratedBatches
from realuid_lightning.modules.networks import GeneratorOptions
from realuid_lightning.modules.optimisation import OptimisationOptions
from realuid_lightning.modules.speed import SpeedOptions, check_precision
from realuid_lightning.nets.guidance import check_guidable, scale_input, unguided_network
from realuid_lightning.nets.per_step import fake_routing
from realuid_lightning.nets.unet import GANHead
from realuid_lightning.noise import Noise
from realuid_lightning.nonfinite import NonFiniteGuard
from realuid_lightning.objective import Objective
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import LATEST, VERSION, RunMetadata

# On purpose: the frozen teacher stays in eval mode; a checkpoint holds the state after an update (resume's state).
warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode at the start of training|Using ModelCheckpoint")


def _plain(section: Any) -> dict[str, Any]:
    """A section's options as plain data (its hparams); a network or process in it is recorded by its spec instead."""
    return {
        f.name: value
        for f in fields(section)
        if not isinstance(value := getattr(section, f.name), (nn.Module, Process))
    }


def _stacked(t: Tensor, xs: list[Tensor], cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(t, x, cond) for one network call over the concatenated batches ``xs`` that share t and cond."""
    n = len(xs)
    return torch.cat([t] * n), torch.cat(xs), None if cond is None else torch.cat([cond] * n)


class RealUIDModule(GenerativeModule, GeneratedBatches):
    """Distils a frozen teacher f* into a one- or few-step generator G_θ with a fake model f (METHOD.md §2.3–2.4).

    Fake update (K times):  min_f α·E_gen||f − (β/α)c||² + (1 − α)·E_real||f − ((1 − β)/(1 − α))c||²,
    generator update:       min_θ α·E_gen[ ||f* − (β/α)c||² − ||f − (β/α)c||² ]  (f fixed),
    with the same x0 and t for the generated and real branches. α = β = 1 is UID (FGM / SiD) and never reads the real
    batch. A coupling process (METHOD.md §2.6) trains on pairs [x1, x0]: x0 is the batch's source in both branches,
    and G_θ(z, x0) sees it. A few-step student's generated batch is its backward-simulated read
    x̂1 = G_θ(x_{t_k}, t_k) (:class:`~realuid_lightning.generator.FewStepGenerator`). ``max_steps`` of the Trainer
    counts iterations: each is one fake or one generator update.

    Its arguments come in sections, each a dataclass (on the command line ``--model.objective.alpha``, …):

    - ``teacher`` (:class:`TeacherOptions`): a teacher checkpoint (its EMA weights by default), diffusers folder or
      hub id, or a network with its process; held as a :class:`FrozenTeacher`, kept out of checkpoints.
    - ``objective`` (:class:`~realuid_lightning.objective.Objective`): α, β, γ, the parameterisation and the
      optional GAN loss (METHOD.md §2.7: a :class:`GANHead` on the fake model's bottleneck discriminates x_t of
      generated and real data at t ~ U[gan_time_min, 1]).
    - ``optimisation`` (:class:`OptimisationOptions`): K, Adam, warm-up, decay, clipping, the non-finite guard.
    - ``generator`` (:class:`GeneratorOptions`): the generator time t_G or a few-step schedule, fine-tuning from a
      distilled generator, how the fake model starts, the dropout of both.
    - ``speed`` (:class:`SpeedOptions`): noise chunks, channels_last, compile, fused Adam, a bf16 teacher
      (docs/scaling.md); under ``strategy='realuid_ddp'`` each trained network has its own DDP wrapper.
    """

    role = "student"
    network_prefix = "generator.net"

    def __init__(
        self,
        teacher: TeacherOptions = TeacherOptions(),
        objective: Objective = Objective(),
        optimisation: OptimisationOptions = OptimisationOptions(),
        generator: GeneratorOptions = GeneratorOptions(),
        speed: SpeedOptions = SpeedOptions(),
    ) -> None:
        super().__init__(speed.noise_chunks)
        self.objective, self.optimisation, self.speed = objective, optimisation, speed
        self.nonfinite = NonFiniteGuard(optimisation.max_nonfinite)  # skip non-finite updates, stop after many in a row
        loaded, self.guidance = teacher.load(), generator.guidance(teacher.guidance_scale)
        self.process, self.data_shape, net_spec = loaded.process, loaded.data_shape, generator.network_spec(loaded.spec)
        student_net, net_spec = self._student_network(loaded, net_spec, teacher.source)
        self.generator, self.fake_model, net_spec = generator.networks(student_net, net_spec, loaded.process)
        self.fake_start = generator.fake_as_teacher(student_net, loaded.process) if optimisation.fine_tune_at else None
        self.teacher = FrozenTeacher(speed.frozen(teacher.game_network(loaded, self.guidance)), teacher.source)
        self.gan_head = self._make_gan_head() if objective.uses_gan else None
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.register_buffer("generator_updates", torch.zeros((), dtype=torch.long))
        self.kept: Draw | None = None  # reuse_generated: the last generator update's batch, for the next fake update
        self.save_hyperparameters()  # under LightningCLI its config as given; in Python the sections, made plain here
        self.hparams.update({name: _plain(value) for name, value in self.hparams.items() if is_dataclass(value)})
        self.net_spec, self.process_spec = net_spec, describe(loaded.process, "process")
        self.automatic_optimization = False

    def _student_network(self, loaded: LoadedTeacher, spec: Any, source: str) -> tuple[nn.Module, Any]:
        """G_θ's and f's network and spec: the teacher's, reading w as an input with a guidance range. Guidance needs
        a trained null class; a teacher that reads w (refit on a range) needs a w or a range inside its own range."""
        if self.guidance is None:
            return unguided_network(loaded.net, f"the teacher ({source})"), spec
        check_guidable(loaded.net, loaded.cond_drop_prob, f"the teacher ({source})")
        if self.guidance.student_input and self.objective.uses_gan:
            raise ConfigError("guidance_range with the GAN loss is not supported (the GAN head has no w input)")
        return self.guidance.student_network(loaded.net, spec)

    def _make_gan_head(self) -> GANHead:
        if not hasattr(self.fake_model, "bottleneck"):  # PerStepFakeModels has none either
            raise ConfigError(
                f"the GAN loss needs one fake model with bottleneck features (e.g. realuid_lightning.nets.UNet, "
                f"fake_per_step and fake_per_count false); got {type(self.fake_model).__name__}"
            )
        return GANHead(self.fake_model.bottleneck_channels, getattr(self.fake_model, "norm_num_groups", 32))

    # ---- what the EMA callback and sampling see ------------------------------------------------
    @property
    def ema_network(self) -> nn.Module:
        return self.generator.net

    @property
    def ema_version(self) -> int:
        return int(self.generator_updates)

    def run_record(self) -> RunMetadata:
        """The base record, with the generator time t_G, a few-step student's schedules (version 2), the teacher's
        fingerprint and the guidance scale(s)."""
        schedules = [list(s) for s in self.generator.schedules.values()]
        few = schedules != [[self.generator.time]]
        guidance = {} if self.guidance is None else self.guidance.record()
        return replace(
            super().run_record(),
            generator_time=self.generator.time,
            generator_schedules=schedules if few else None,
            version=LATEST if few else VERSION,
            teacher_fingerprint=self.teacher.fingerprint(),
            **guidance,
        )

    def restore_run_record(self, record: RunMetadata) -> None:
        """The base restore; a checkpoint trained with other teacher weights is refused."""
        super().restore_run_record(record)
        self.teacher.check_fingerprint(record.teacher_fingerprint)

    @property
    def sampled_steps(self) -> dict[str, int | None]:
        """{tag suffix: step count} the FD and preview callbacks use: '' for one count, else '_{M}steps' per count."""
        counts = self.generator.steps
        return {"": None} if len(counts) == 1 else {f"_{m}steps": m for m in counts}

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        cond: Tensor | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """x1 = G_θ(z), z ~ N(0, I), in ``steps`` of the trained step counts (default: the most), its re-noising drawn
        by ``generator`` (G_θ(z, x0) with the sources x0 as cond for a coupling process); G_θ(z, c, w) at ``guidance``
        w for a student trained on a guidance range (default: the range's middle)."""
        z = self.source_noise(num, generator)
        w = scale_input(self.generator.net, guidance, z)
        return self.generator(z, self.sampling_cond(num, cond), steps, generator, *w)

    # ---- the game ------------------------------------------------------------------------------
    @property
    def uses_real_data(self) -> bool:
        """Whether a fake update reads the real batch (the objective's choice)."""
        return self.objective.uses_real_data

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x1_real, cond = split_batch(batch)
        self.record_batch(x1_real, cond)
        iteration, iterations = int(self.iteration), self.trainer.max_steps
        if iteration == self.optimisation.fine_tune_start(iterations):
            self.optimisation.start_fine_tuning(self)
        generator_turn = self.optimisation.generator_turn(iteration, iterations)
        opt, sched, net, name = self._updated_player(generator_turn)
        with self.toggled_optimizer(opt):
            if generator_turn:
                loss = self._generator_loss(x1_real, cond, self.optimisation.keeps_generated(iteration, iterations))
            else:
                loss = self._fake_loss(x1_real, cond)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            grad_norm = total_grad_norm(net.parameters())
            stepped = self.nonfinite.check(self, loss, grad_norm, opt, name=name)
            if stepped:
                if self.optimisation.grad_clip:  # clip_gradients' own path, without its refusal of fused Adam in bf16
                    self.trainer.precision_plugin.clip_grad_by_norm(opt, self.optimisation.grad_clip)
                opt.step()
                sched.step()
        self.iteration += 1
        self.generator_updates += int(generator_turn and stepped)
        self._log_update(name, loss, grad_norm)

    def _updated_player(self, generator_turn: bool) -> tuple[Any, Any, nn.Module, str]:
        """(optimiser, scheduler, network, name) of the generator on its turn, else of the fake model."""
        (opt_fake, opt_gen), (sched_fake, sched_gen) = self.optimizers(), self.lr_schedulers()
        if generator_turn:
            return opt_gen, sched_gen, self.generator, "generator"
        return opt_fake, sched_fake, self.fake_model, "fake"

    def _log_update(self, name: str, loss: Tensor, grad_norm: Tensor) -> None:
        """The update's loss; its gradient norm and the generator update count where Lightning writes logs."""
        self.log(f"train/{name}_loss", loss.detach(), prog_bar=True)
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # Lightning writes logs only there
            self.log_dict(
                {f"train/{name}_grad_norm": grad_norm, "train/generator_updates": self.generator_updates.float()},
                prog_bar=True,
            )

    def _fake_loss(self, x1_real: Tensor, cond: Tensor | None) -> Tensor:
        """The objective's fake loss on a generated batch and, when used, the real batch (one forward pass)."""
        noise = self.update_noise()
        x1_gen, step_route, w, w_input = self._fake_draw(noise, x1_real, cond)
        x0 = self.process.source(x1_gen, cond, noise)
        t = noise.time(self.process, x1_gen.shape[0], x1_gen.device)
        x1s = [x1_gen, x1_real] if self.uses_real_data else [x1_gen]
        branches = [self.process.sample(x0, x1, t, noise) for x1 in x1s]
        t_all, x_all, cond_all = _stacked(t, [b.x_t for b in branches], cond)
        w_all, route = [torch.cat([w] * len(x1s)) for w in w_input], fake_routing(self.fake_model, step_route, len(x1s))
        fake = self.trained("fake_model")(t_all, x_all, cond_all, *w_all, **route)
        with torch.no_grad():
            w_teacher = w_all[0] if w_all else w
            teacher = self.teacher(t_all, x_all, cond_all, w_teacher) if self.objective.fake_reads_teacher else None
        head = self.trained("gan_head") if self.gan_head is not None else None
        logits = None if head is None else self._gan_logits([x1_gen, x1_real], x0, cond, noise, head)
        return self.objective.fake_loss(branches, fake, teacher, logits).mean()

    def _generator_loss(self, x1_real: Tensor, cond: Tensor | None, keep: bool = False) -> Tensor:
        """The objective's generator loss on a generated batch; the real batch only gives shape and conditioning.
        ``keep``: the batch is kept for the fake update after it (``reuse_generated``)."""
        noise = self.update_noise()
        x1_gen, step_route, w, w_input = self._generator_draw(noise, x1_real, cond, keep)
        x0 = self.process.source(x1_gen, cond, noise)
        t = noise.time(self.process, x1_gen.shape[0], x1_gen.device)
        gen = self.process.sample(x0, x1_gen, t, noise)
        teacher_gen = self.teacher(t, gen.x_t, cond, w)
        fake_gen = self.fake_model(t, gen.x_t, cond, *w_input, **fake_routing(self.fake_model, step_route, 1))
        logits = None if self.gan_head is None else self._gan_logits([x1_gen], x0, cond, noise, self.gan_head)
        return self.objective.generator_loss(gen, teacher_gen, fake_gen, logits).mean()

    def _gan_logits(self, x1s: list[Tensor], x0: Tensor, cond: Tensor | None, noise: Noise, head: nn.Module) -> Tensor:
        """D(x_t) = head(fake_model.bottleneck(t, x_t)) at t ~ U[gan_time_min, 1] near the data,
        for each batch in x1s."""
        t_min = self.objective.gan_time_min
        t = t_min + (1 - t_min) * noise.rand(x0.shape[0], x0)
        t_all, x_all, cond_all = _stacked(t, [self.process.sample(x0, x1, t, noise).x_t for x1 in x1s], cond)
        return head(self.fake_model.bottleneck(t_all, x_all, cond_all))

    def configure_optimizers(self) -> Any:
        head = self.gan_head.parameters() if self.gan_head is not None else []
        fake_params = [*self.fake_model.parameters(), *head]
        iterations = self.trainer.max_steps if self._trainer is not None else -1
        return self.optimisation.optimisers(
            fake_params, list(self.generator.parameters()), iterations, self.speed.adam_options(self.device)
        )

    # ---- DDP, speed and checkpoints ------------------------------------------------------------
    def ddp_networks(self) -> dict[str, nn.Module]:
        """The networks :class:`RealUIDDDPStrategy` wraps, each in its own DDP (never the teacher)."""
        nets = {"generator": self.generator, "fake_model": self.fake_model}
        return nets if self.gan_head is None else {**nets, "gan_head": self.gan_head}

    def trained(self, name: str) -> nn.Module:
        """Network ``name`` for the update that trains it: through its DDP wrapper (which averages its gradients)
        under :class:`RealUIDDDPStrategy`."""
        net, strategy = getattr(self, name), self._trainer.strategy if self._trainer is not None else None
        return strategy.trained(name, net) if isinstance(strategy, RealUIDDDPStrategy) else net

    def configure_model(self) -> None:
        self.speed.prepare([self.generator.net, self.fake_model, self.teacher.net])

    def on_fit_start(self) -> None:
        check_strategy(self.trainer.strategy)
        check_precision(self.trainer)
        self.optimisation.check_callbacks(self.trainer)
        super().on_fit_start()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base's, without the teacher, with a kept generated batch not yet used."""
        super().on_save_checkpoint(checkpoint)
        self.teacher.leave_out(checkpoint, "teacher.")
        self.save_kept(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.teacher.put_back(checkpoint, "teacher.")
        self.load_kept(checkpoint)
