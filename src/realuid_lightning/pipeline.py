"""The diffusers pipeline a distilled one- or few-step generator is exported as (``save_pretrained`` /
``from_pretrained``) and its components; ``realuid export`` (:mod:`realuid_lightning.export`) writes it."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from diffusers import ConfigMixin, DiffusionPipeline, ImagePipelineOutput, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from realuid_lightning.checkpoint import instantiate
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import FewStepGenerator, step_times
from realuid_lightning.nets.diffusers import unet_timestep
from realuid_lightning.nets.guidance import ScaleConditioned, ScaleEmbedding, sampling_scale, scale_input
from realuid_lightning.nets.per_step import PerStepNetworks
from realuid_lightning.processes.base import Process
from realuid_lightning.processes.flow import FlowMatching
from realuid_lightning.teacher_reads import TeacherReads, check_times

ADAPTERS = ("UNet", "DiffusersUNet")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class _TimedUNet(nn.Module):
    """net(t, x, y) = unet(x, k(t), class_labels = y).sample in the convention of the adapter the generator was
    trained with:

    k = time_scale·t for :class:`~realuid_lightning.nets.UNet`, k = (1 − t)(N − 1) for :class:`DiffusersUNet`;
    ``null_class``: its last label is the null class ∅ of classifier-free guidance (a teacher's).
    """

    def __init__(
        self, unet: UNet2DModel, net_adapter: str, time_scale: float, num_train_timesteps: int, null_class: bool = False
    ) -> None:
        super().__init__()
        self.unet, self.net_adapter, self.null_class = unet, net_adapter, null_class
        self.time_scale, self.num_train_timesteps = time_scale, num_train_timesteps

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        k = self.time_scale * t if self.net_adapter == "UNet" else unet_timestep(t, self.unet, self.num_train_timesteps)
        return self.unet(x, k, class_labels=cond).sample


class ScaleEmbeddingModel(ModelMixin, ConfigMixin):
    """The pipeline component holding a guidance_range student's scale embedding e(w)
    (:class:`~realuid_lightning.nets.guidance.ScaleEmbedding`), saved and loaded beside the UNet."""

    @register_to_config
    def __init__(self, dim: int, frequencies: int = 8) -> None:
        super().__init__()
        self.embedding = ScaleEmbedding(dim, frequencies)


class StepUNets(ModelMixin, ConfigMixin):
    """The pipeline component holding a per-step student's later networks g_2 … g_N (one UNet2DModel per step time
    after the first, :class:`~realuid_lightning.nets.per_step.PerStepNetworks`), saved beside g_1, the ``unet``."""

    @register_to_config
    def __init__(self, unet_configs: list[dict]) -> None:
        super().__init__()
        self.unets = nn.ModuleList(UNet2DModel.from_config(config) for config in unet_configs)

    @classmethod
    def of(cls, unets: Sequence[UNet2DModel]) -> StepUNets:
        """A copy of ``unets`` (their configs and weights) as the component."""
        component = cls([dict(unet.config) for unet in unets])
        for mine, unet in zip(component.unets, unets):
            mine.load_state_dict(unet.state_dict())
        return component


class OneStepPipeline(DiffusionPipeline):
    """A RealUID generator as a diffusers pipeline: images in ONE network evaluation,

    z ~ N(0, I),  x_G = b_{t_G}·z,  x̂1 = process.to_data(net(t_G, x_G, y), x_G, t_G),

    or, for a few-step student, in ``num_inference_steps`` = M of its trained step counts: x̂1 read at each t_k of the
    schedule of M and re-noised to t_{k+1} with z' drawn like z (:class:`~realuid_lightning.FewStepGenerator`). The
    config holds the process spec (rebuilt with :func:`~realuid_lightning.checkpoint.instantiate`; only Process classes
    are accepted), the generator time t_G, a few-step student's ``generator_schedules`` and the time convention of the
    network (``net_adapter``: 'UNet' reads timestep = time_scale·t, 'DiffusersUNet' reads diffusers timesteps
    (1 − t)(N − 1)). A generator distilled with a guidance range keeps its scale embedding e(w) as the
    ``scale_embedding`` component and the range as ``guidance_range``; the call then takes ``guidance_scale`` w
    (default: the middle of the range). Exported with ``realuid export --teacher-reads``, the pipeline also holds the
    teacher's UNet as the ``teacher`` component and reads each sample once more with it at each time of
    ``teacher_reads`` (:class:`~realuid_lightning.teacher_reads.TeacherReads`, one network read each; guided at the
    student's w), as ``realuid sample --teacher-reads`` does. A student with one network per step time
    (``per_step_networks``) keeps g_1 as the ``unet`` and g_2 … g_N as the ``later_unets`` component.

    Example::

        pipe = OneStepPipeline.from_pretrained("exported/")
        images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0)).images  # 16 PIL images
    """

    model_cpu_offload_seq = "unet"
    # components (loaded from their folders), default None
    _optional_components = ["scale_embedding", "teacher", "later_unets"]

    def __init__(
        self,
        unet: UNet2DModel,
        process: dict | None = None,
        generator_time: float = 0.0,
        net_adapter: str = "UNet",
        time_scale: float = 1000.0,
        num_train_timesteps: int = 1000,
        generator_schedules: list[list[float]] | None = None,
        scale_embedding: ScaleEmbeddingModel | None = None,
        guidance_range: list[float] | None = None,
        teacher: UNet2DModel | None = None,
        teacher_reads: list[float] | None = None,
        teacher_network: dict | None = None,
        teacher_guidance_scale: float | None = None,
        later_unets: StepUNets | None = None,
    ) -> None:
        super().__init__()
        if net_adapter not in ADAPTERS:
            raise ConfigError(f"net_adapter={net_adapter!r} is not supported; choose one of {ADAPTERS}")
        process = (
            process
            if process is not None
            else {"class_path": f"{FlowMatching.__module__}.FlowMatching", "init_args": {}}
        )
        if (scale_embedding is None) != (guidance_range is None):
            raise ConfigError("give scale_embedding and guidance_range together (a student trained on a range of w)")
        if (teacher is None) != (teacher_reads is None):
            raise ConfigError("give teacher and teacher_reads together (the teacher that reads each sample again)")
        self.register_modules(unet=unet, scale_embedding=scale_embedding, teacher=teacher, later_unets=later_unets)
        self.register_to_config(
            teacher_reads=teacher_reads,
            teacher_network=teacher_network,
            teacher_guidance_scale=teacher_guidance_scale,
            guidance_range=guidance_range,
            process=process,
            generator_time=generator_time,
            net_adapter=net_adapter,
            time_scale=time_scale,
            num_train_timesteps=num_train_timesteps,
            generator_schedules=generator_schedules,
        )

    def student(self) -> FewStepGenerator:
        """G around this pipeline's UNet: G(z) = process.to_data(net(t_G, b_{t_G}·z), b_{t_G}·z, t_G), or the few-step
        student of its ``generator_schedules``; with a scale embedding, G(z, c, w) around a copy of it that reads w
        (:class:`ScaleConditioned`); with ``later_unets``, one UNet per step time (:class:`PerStepNetworks`)."""
        cfg = self.config
        timed = [cfg.net_adapter, cfg.time_scale, cfg.num_train_timesteps]
        net = _TimedUNet(self.unet, *timed)
        if self.later_unets is not None:
            net = PerStepNetworks(
                net, step_times(cfg.generator_schedules), [_TimedUNet(unet, *timed) for unet in self.later_unets.unets]
            )
        if self.scale_embedding is not None:
            net = ScaleConditioned(copy.deepcopy(net), *cfg.guidance_range)
            net.embedding.scale = self.scale_embedding.embedding
        return FewStepGenerator(net, instantiate(dict(cfg.process)), cfg.generator_schedules or [[cfg.generator_time]])

    def reads(
        self, teacher_reads: Sequence[float] | None = None, process: Process | None = None
    ) -> TeacherReads | None:
        """The teacher's reads of a sample at ``teacher_reads`` (None: the exported ones; []: none) on ``process``
        (None: rebuilt from the config; the call passes its student's, so the config is read once)."""
        cfg = self.config
        times = list(cfg.teacher_reads or []) if teacher_reads is None else list(teacher_reads)
        if not times:
            return None
        if self.teacher is None:
            raise ConfigError(
                f"teacher_reads={times}: this pipeline holds no teacher; export it with realuid export --teacher-reads"
            )
        process = process if process is not None else instantiate(dict(cfg.process))
        check_times(process, times)
        net = _TimedUNet(self.teacher, **cfg.teacher_network)
        return TeacherReads(net, process, tuple(times), cfg.teacher_guidance_scale)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image: the UNet's (in_channels, sample_size, sample_size)."""
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))

    def noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """z = torch.randn((batch_size, C, H, W), generator=generator, dtype=unet.dtype) on the generator's device
        (CPU if None), then moved to the pipeline's device: the same z as ``torch.randn`` with that generator."""
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(
            (batch_size, *self.sample_shape), generator=generator, device=device, dtype=self.unet.dtype
        ).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        class_labels: Tensor | None = None,
        return_dict: bool = True,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        teacher_reads: Sequence[float] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """``batch_size`` images x̂1 = G(z) with z from :meth:`noise`, in ``num_inference_steps`` of the trained step
        counts (default: the most; its re-noising draws from ``generator`` after z); ``class_labels`` (B,) for a
        class-conditional UNet; ``guidance_scale`` w for a generator distilled with a guidance range (within it);
        ``teacher_reads``: the times of the teacher's reads after the student (default: the exported ones; [] none).

        output_type: 'pil' (list of images), 'np' ((B, H, W, C) in [0, 1]), 'pt' ((B, C, H, W) in [0, 1],
        i.e. (x̂1 + 1)/2 clipped) or 'latent' (the raw x̂1 in data space [−1, 1], not clipped).
        """
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"output_type={output_type!r} is not supported; choose one of {OUTPUT_TYPES}")
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels, device=self.device).reshape(-1).expand(batch_size)
        z, student = self.noise(batch_size, generator), self.student()
        w = scale_input(student.net, guidance_scale, z)
        images = student(z, class_labels, num_inference_steps, generator, *w)
        reads = self.reads(teacher_reads, student.process)
        if reads is not None:
            images = reads(images, class_labels, generator, sampling_scale(student.net, guidance_scale))
        if output_type != "latent":
            images = (images / 2 + 0.5).clamp(0, 1)
        if output_type in ("np", "pil"):
            images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
