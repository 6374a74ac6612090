"""diffusers ``UNet2DModel`` called as ``net(t, x, cond)``, with the encoder features for a GAN head."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.labels import checked_null_class


class UNet(nn.Module):
    """f(t, x, y) = UNet2DModel(x, timestep = time_scale·t, class_labels = y).sample, with t ∈ [0, 1], t = 1 data.

    The paper's CIFAR-10 network (torchcfm U-Net: 128 channels, multipliers 1, 2, 2, 2, two residual
    blocks per level, attention at 16×16, 64-channel heads) is ``UNet(32, 3, (128, 256, 256, 256),
    attention_levels=(1,))`` here, 35.7M parameters. ``num_classes`` adds a label embedding (class-
    conditional CIFAR-10); ``cond`` is then a (B,) tensor of integer labels. ``null_class`` adds one more label,
    the null class ∅ = ``num_classes`` that classifier-free guidance reads (the embedding has C + 1 rows; the teacher
    learns it with ``cond_drop_prob``). ``source_channels`` > 0 makes
    it the network of a coupling process: ``cond`` is the source image x0 (B, source_channels, H, W), concatenated
    to x_t on the channels (in_channels = channels + source_channels). :meth:`bottleneck`
    returns the mid-block features that the GAN head of METHOD.md §2.7 reads.
    """

    def __init__(
        self,
        sample_size: int = 32,
        channels: int = 3,
        block_out_channels: Sequence[int] = (128, 256, 256, 256),
        layers_per_block: int = 2,
        attention_levels: Sequence[int] = (1,),
        attention_head_dim: int = 64,
        num_classes: int | None = None,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        time_scale: float = 1000.0,
        source_channels: int = 0,
        null_class: bool = False,
    ) -> None:
        super().__init__()
        levels = len(block_out_channels)
        self.sample_size, self.channels, self.block_out_channels = sample_size, channels, list(block_out_channels)
        self.layers_per_block, self.attention_levels = layers_per_block, list(attention_levels)
        self.attention_head_dim, self.num_classes, self.dropout = attention_head_dim, num_classes, dropout
        self.norm_num_groups, self.time_scale, self.source_channels = norm_num_groups, time_scale, source_channels
        self.null_class = checked_null_class(null_class, num_classes)
        self._check_config()
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=channels + source_channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            num_class_embeds=None if num_classes is None else num_classes + int(null_class),
            down_block_types=tuple(
                "AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels)
            ),
            up_block_types=tuple(
                "AttnUpBlock2D" if levels - 1 - i in attention_levels else "UpBlock2D" for i in range(levels)
            ),
            dropout=dropout,
            norm_num_groups=norm_num_groups,
        )

    def _check_config(self) -> None:
        """One ConfigError line for a configuration that UNet2DModel would reject or mis-build."""
        sample_size, num_classes, source_channels = self.sample_size, self.num_classes, self.source_channels
        block_out_channels, attention_levels = self.block_out_channels, self.attention_levels
        attention_head_dim, norm_num_groups = self.attention_head_dim, self.norm_num_groups
        levels = len(block_out_channels)
        if source_channels < 0 or (source_channels and num_classes is not None):
            raise ConfigError(
                f"source_channels={source_channels} must be >= 0, and 0 with num_classes={num_classes} "
                "(cond is either class labels or a source image)"
            )
        if any(not 0 <= level < levels for level in attention_levels):
            raise ConfigError(
                f"attention_levels={list(attention_levels)} must index block_out_channels (0..{levels - 1})"
            )
        if any(c % norm_num_groups for c in block_out_channels):
            raise ConfigError(
                f"block_out_channels={list(block_out_channels)} must be multiples of norm_num_groups={norm_num_groups}"
            )
        # the mid block attends too
        attended = [block_out_channels[i] for i in attention_levels] + [block_out_channels[-1]]
        if any(c % attention_head_dim for c in attended):
            raise ConfigError(
                f"attention_head_dim={attention_head_dim} must divide the channels of every attention level "
                f"and of the bottleneck ({sorted(set(attended))})"
            )
        if sample_size % 2 ** (levels - 1):
            raise ConfigError(f"sample_size={sample_size} must be divisible by 2^{levels - 1} for {levels} levels")

    @property
    def bottleneck_channels(self) -> int:
        return self.block_out_channels[-1]

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        if self.source_channels:
            if cond is None or cond.shape != (x.shape[0], self.source_channels, *x.shape[2:]):
                raise ValueError(
                    f"this UNet takes a source image of shape (B, {self.source_channels}, H, W) as cond, "
                    f"got {None if cond is None else tuple(cond.shape)} for x of shape {tuple(x.shape)}"
                )
        elif (cond is None) != (self.num_classes is None):  # a ConfigError: the CLI prints it as one line
            raise ConfigError(
                f"the network is class-conditional (num_classes={self.num_classes}) but the data gives no labels; "
                "set conditional: true on the data module (labels: true for an image folder)"
                if cond is None
                else "the network is unconditional (num_classes: null) but the data gives labels; set "
                "conditional: false on the data module, or num_classes on the network"
            )

    def _inputs(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(UNet input, class labels): [x, x0] on the channels for a source image, else (x, labels)."""
        self._check(x, cond)
        return (torch.cat([x, cond.to(x.dtype)], dim=1), None) if self.source_channels else (x, cond)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        x, labels = self._inputs(x, cond)
        return self.unet(x, self.time_scale * t, class_labels=labels).sample

    def bottleneck(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Mid-block features (B, C_mid, H/2^(L−1), W/2^(L−1)): the encoder half of ``forward`` only."""
        x, labels = self._inputs(x, cond)
        unet = self.unet
        emb = unet.time_embedding(unet.time_proj(self.time_scale * t).to(x.dtype))
        if unet.class_embedding is not None:
            emb = emb + unet.class_embedding(labels).to(x.dtype)
        h = unet.conv_in(x)
        for block in unet.down_blocks:
            h, _ = block(hidden_states=h, temb=emb)
        return unet.mid_block(h, emb)


class GANHead(nn.Module):
    """Discriminator head on bottleneck features (METHOD.md §2.7): two (conv k2 s2 → GroupNorm → SiLU) stages
    and a 1×1 conv to one logit per position, averaged: D = mean_{h,w} logits, shape (B,).
    """

    def __init__(self, channels: int = 256, norm_num_groups: int = 32) -> None:
        super().__init__()
        self.channels, self.norm_num_groups = channels, norm_num_groups
        stage = lambda: [nn.Conv2d(channels, channels, 2, 2), nn.GroupNorm(norm_num_groups, channels), nn.SiLU()]
        self.layers = nn.Sequential(*stage(), *stage(), nn.Conv2d(channels, 1, 1))

    def forward(self, features: Tensor) -> Tensor:
        if min(features.shape[-2:]) < 4:
            raise ValueError(
                f"the GAN head needs bottleneck features of at least 4×4, got {tuple(features.shape[-2:])}"
            )
        return self.layers(features).mean(dim=(1, 2, 3))
