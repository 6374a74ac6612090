"""EDM's network preconditioning (Karras et al. 2022, Table 1): a wrapper around any backbone,
not part of the process."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import expand_like
from realuid_lightning.processes.diffusion import EDM


class EDMCoefficients(NamedTuple):
    """c_skip, c_out, c_in, c_noise of D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise), each of shape (B,)."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


class EDMPrecond(nn.Module):
    """The denoiser D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)) around a backbone F, with

    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ·σ_d/√(σ² + σ_d²),  c_in = 1/√(σ² + σ_d²),  c_noise = ¼·ln σ,

    σ = process.sigma(t) and σ_d = process.sigma_data. Called as ``D(t, x, cond)`` with our time t, it is an
    x1-prediction network for ``process`` (an :class:`EDM` with prediction='x1'); the backbone is called as
    ``net(c_noise, c_in·x, cond)``, i.e. it sees c_noise in place of a time.
    """

    def __init__(self, net: nn.Module, process: EDM | None = None) -> None:
        super().__init__()
        process = EDM() if process is None else process
        if not isinstance(process, EDM) or process.prediction != "x1":
            raise ConfigError(
                f"process={type(process).__name__}(prediction={getattr(process, 'prediction', None)!r}) "
                "is not supported; EDMPrecond outputs a denoiser D(x; σ), so it needs "
                "an EDM process with prediction='x1'"
            )
        self.net, self.process = net, process

    def coefficients(self, sigma: Tensor) -> EDMCoefficients:
        """(c_skip, c_out, c_in, c_noise) at noise levels σ of shape (B,) (EDM Table 1)."""
        sigma_data = self.process.sigma_data
        norm = (sigma**2 + sigma_data**2).sqrt()
        return EDMCoefficients(
            c_skip=sigma_data**2 / norm**2, c_out=sigma * sigma_data / norm, c_in=1 / norm, c_noise=sigma.log() / 4
        )

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        c = self.coefficients(self.process.sigma(t))
        c_skip, c_out, c_in = (expand_like(v, x) for v in (c.c_skip, c.c_out, c.c_in))
        return c_skip * x + c_out * self.net(c.c_noise, c_in * x, cond)
