"""Matching processes: how x_t is drawn between source and data, and what the network regresses."""

from realuid_lightning.processes.base import AffineCoefficients, Process, ProcessSample, expand_like
from realuid_lightning.processes.diffusion import EDM, ContinuousVP, DiscreteVP
from realuid_lightning.processes.flow import FlowMatching

__all__ = ["AffineCoefficients", "ContinuousVP", "DiscreteVP", "EDM", "FlowMatching", "Process", "ProcessSample", "expand_like"]
