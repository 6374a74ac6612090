"""DDP for the alternating two-network game: one DistributedDataParallel per trained network, none for the teacher.

Lightning's ``strategy="ddp"`` wraps the whole LightningModule in one DDP. A RealUID update back-propagates
into one network only, so plain DDP fails ("parameters that were not used in producing the loss"), and
``find_unused_parameters=True`` works but all-reduces the gradient buckets of *both* networks on every
update and walks the autograd graph each time (docs/scaling.md has the measurements).
:class:`RealUIDDDPStrategy` instead wraps each network named by ``module.ddp_networks()`` in its own
DDP and keeps the wrappers (``strategy.wrappers``); the module calls a network through its wrapper only on the
update that trains it (``module.trained(name)`` asks the strategy): a fake update all-reduces P_fake values, a
generator update P_gen.

Select it with ``Trainer(strategy=RealUIDDDPStrategy())``, ``strategy="realuid_ddp"``, or on the command
line ``--trainer.strategy realuid_ddp``. Keyword arguments other than Lightning's go to every
``DistributedDataParallel`` (e.g. ``find_unused_parameters=True`` for a network with unused branches);
``ddp_comm_hook`` (e.g. bf16 gradient compression) is registered on every wrapper. A module without
``ddp_networks`` (a teacher's :class:`MatchingModule`) is wrapped whole, as by ``strategy="ddp"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook
from lightning.pytorch.strategies import DDPStrategy, Strategy, StrategyRegistry
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from realuid_lightning.errors import ConfigError


class RealUIDDDPStrategy(DDPStrategy):
    """DDPStrategy that wraps ``module.ddp_networks()`` separately and leaves everything else (the teacher) alone."""

    strategy_name = "realuid_ddp"
    wrappers: Mapping[str, nn.Module] = MappingProxyType({})  # name → DDP wrapper, set per fit by configure_ddp

    def configure_ddp(self) -> None:
        networks = getattr(self.model, "ddp_networks", None)
        if networks is None:
            super().configure_ddp()
            return
        self.wrappers = {name: self._wrap(net) for name, net in networks().items()}

    def trained(self, name: str, net: nn.Module) -> nn.Module:
        """Network ``name`` (``net``) as the update that trains it calls it: its DDP wrapper, which averages its
        gradients, or ``net`` itself when it is not wrapped."""
        return self.wrappers.get(name, net)

    def _wrap(self, net: nn.Module) -> nn.Module:
        """DDP(net) with this strategy's DDP arguments; initial weights broadcast from rank 0."""
        wrapper = self._setup_model(net)
        if self._ddp_comm_hook is not None:
            _register_ddp_comm_hook(wrapper, self._ddp_comm_state, self._ddp_comm_hook, self._ddp_comm_wrapper)
        return wrapper

    def teardown(self) -> None:
        self.wrappers = {}  # the module goes on without DDP (a later fit wraps it again)
        super().teardown()


def check_strategy(strategy: Strategy) -> None:
    """Refuse Lightning's plain DDP, whose one wrapper around the whole module fails on alternating updates."""
    wrapper = strategy.model
    if isinstance(wrapper, DistributedDataParallel) and not wrapper.find_unused_parameters:
        raise ConfigError(
            "strategy='ddp' (also with static_graph) wraps both networks in one DDP, which fails on "
            "alternating updates; use --trainer.strategy realuid_ddp "
            "(realuid_lightning.RealUIDDDPStrategy), see docs/scaling.md"
        )


if RealUIDDDPStrategy.strategy_name not in StrategyRegistry:
    StrategyRegistry.register(
        RealUIDDDPStrategy.strategy_name,
        RealUIDDDPStrategy,
        description="DDP with one wrapper per trained network of a RealUIDModule (the teacher unwrapped)",
    )
