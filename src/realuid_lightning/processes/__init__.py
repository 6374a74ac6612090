"""Matching processes: how x_t is drawn between source and data, and what the network regresses."""

from realuid_lightning.processes.base import AffineCoefficients, Process, ProcessSample, expand_like
from realuid_lightning.processes.bridge import BrownianBridge
from realuid_lightning.processes.coupling import CouplingProcess
from realuid_lightning.processes.diffusion import EDM, ContinuousVP, DiscreteVP
from realuid_lightning.processes.flow import FlowMatching
from realuid_lightning.processes.interpolant import StochasticInterpolant

__all__ = [
    "AffineCoefficients",
    "BrownianBridge",
    "ContinuousVP",
    "CouplingProcess",
    "DiscreteVP",
    "EDM",
    "FlowMatching",
    "Process",
    "ProcessSample",
    "StochasticInterpolant",
    "expand_like",
]
