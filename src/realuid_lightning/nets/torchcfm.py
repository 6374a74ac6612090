"""torchcfm's U-Net (the official RealUID backbone) called as ``net(t, x, cond)``.

Needs the optional ``torchcfm`` package: ``pip install 'realuid-lightning[official]'``.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.labels import checked_null_class

INSTALL_HINT = "pip install 'realuid-lightning[official]'"


def checked_unet_wrapper(
    dim: Sequence[int], class_cond: bool, num_classes: int | None, null_class: bool = False
) -> type[nn.Module]:
    """torchcfm's ``UNetModelWrapper``, once ``dim`` and the class arguments are valid; one ConfigError line if not,
    or if torchcfm is not installed."""
    try:
        from torchcfm.models.unet.unet import UNetModelWrapper
    except ImportError as err:
        raise ConfigError(f"TorchCFMUNet needs the torchcfm package ({err}); install it with {INSTALL_HINT}") from None
    if len(dim) != 3:
        raise ConfigError(f"dim={list(dim)} must be (channels, height, width)")
    if class_cond and (num_classes is None or num_classes < 1):
        raise ConfigError(f"class_cond=True needs num_classes >= 1 (got num_classes={num_classes})")
    checked_null_class(null_class, num_classes if class_cond else None)
    return UNetModelWrapper


class TorchCFMUNet(nn.Module):
    """f(t, x, y) = UNetModelWrapper(t, x, y = y) of torchcfm (Tong et al. 2024), t ∈ [0, 1], t = 1 data.

    The defaults are the official RealUID / torchcfm CIFAR-10 network: 128 channels, multipliers 1, 2, 2, 2,
    two residual blocks per level, attention at 16×16 with 64-channel heads. The torchcfm module is kept
    as ``self.unet``, so parameter names map by one fixed prefix:

        TorchCFMUNet key = "unet." + official key   (an official state dict loads into ``net.unet``).

    The init args are those of ``UNetModelWrapper`` with the same names, except ``learn_sigma`` and
    ``use_fp16`` (always False: a velocity network outputs the data channels, in float32).
    ``class_cond=True`` adds the label embedding for ``num_classes`` classes; ``cond`` is then a (B,)
    tensor of integer labels; ``null_class`` adds the null label ∅ = ``num_classes`` of classifier-free guidance (the
    label embedding has C + 1 rows). :meth:`bottleneck` returns the mid-block features a GAN head reads.
    """

    def __init__(
        self,
        dim: Sequence[int] = (3, 32, 32),
        num_channels: int = 128,
        num_res_blocks: int = 2,
        channel_mult: Sequence[float] = (1, 2, 2, 2),
        class_cond: bool = False,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        attention_resolutions: str = "16",
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        dropout: float = 0.0,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        null_class: bool = False,
    ) -> None:
        super().__init__()
        UNetModelWrapper = checked_unet_wrapper(dim, class_cond, num_classes, null_class)
        self.dim, self.num_channels, self.num_classes, self.num_heads = tuple(dim), num_channels, num_classes, num_heads
        self.num_res_blocks, self.use_checkpoint, self.resblock_updown = num_res_blocks, use_checkpoint, resblock_updown
        self.channel_mult, self.class_cond, self.num_head_channels = tuple(channel_mult), class_cond, num_head_channels
        self.attention_resolutions, self.use_new_attention_order = attention_resolutions, use_new_attention_order
        self.num_heads_upsample, self.use_scale_shift_norm = num_heads_upsample, use_scale_shift_norm
        self.dropout, self.null_class = dropout, null_class
        self.unet = UNetModelWrapper(
            dim=self.dim,
            num_channels=num_channels,
            num_res_blocks=num_res_blocks,
            channel_mult=list(channel_mult),
            class_cond=class_cond,
            num_classes=num_classes + int(null_class) if class_cond else num_classes,
            use_checkpoint=use_checkpoint,
            attention_resolutions=attention_resolutions,
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample,
            use_scale_shift_norm=use_scale_shift_norm,
            dropout=dropout,
            resblock_updown=resblock_updown,
            use_new_attention_order=use_new_attention_order,
        )

    @property
    def bottleneck_channels(self) -> int:
        return int(self.num_channels * self.channel_mult[-1])

    def _check(self, cond: Tensor | None) -> None:
        if (cond is None) == self.class_cond:
            raise ValueError(
                "this TorchCFMUNet is class-conditional: pass integer labels as cond"
                if cond is None
                else "this TorchCFMUNet is unconditional (class_cond=False) but got labels"
            )

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """v = UNetModelWrapper(t, x, y = cond): t (B,), x (B, C, H, W), cond (B,) labels or None."""
        self._check(cond)
        return self.unet(t, x, y=cond)

    def bottleneck(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Mid-block features h = middle_block(input_blocks(x)) of shape (B, bottleneck_channels, H/2^(L−1), W/2^(L−1)).

        This is the encoder half of :meth:`forward`, as read by the official code's ``forward_head``.
        """
        from torchcfm.models.unet.nn import timestep_embedding

        self._check(cond)
        unet = self.unet
        emb = unet.time_embed(timestep_embedding(t, unet.model_channels))
        if unet.num_classes is not None:
            emb = emb + unet.label_emb(cond)
        h = x.type(unet.dtype)
        for module in unet.input_blocks:
            h = module(h, emb)
        return unet.middle_block(h, emb)
