"""DDP for the alternating two-network game: one DistributedDataParallel per trained network, none for the teacher.

Lightning's ``strategy="ddp"`` wraps the whole LightningModule in one DDP. A RealUID update back-propagates
into one network only, so plain DDP fails ("parameters that were not used in producing the loss"), and
``find_unused_parameters=True`` works but all-reduces the gradient buckets of *both* networks on every
update and walks the autograd graph each time (docs/scaling.md has the measurements).
:class:`RealUIDDDPStrategy` instead wraps each network named by ``module.ddp_networks()`` in its own
DDP, and the module calls a network through its wrapper only on the update that trains it
(``module.trained(name)``): a fake update all-reduces P_fake values, a generator update P_gen.

Select it with ``Trainer(strategy=RealUIDDDPStrategy())``, ``strategy="realuid_ddp"``, or on the command
line ``--trainer.strategy realuid_ddp``. Keyword arguments other than Lightning's go to every
``DistributedDataParallel`` (e.g. ``find_unused_parameters=True`` for a network with unused branches);
``ddp_comm_hook`` (e.g. bf16 gradient compression) is registered on every wrapper. A module without
``ddp_networks`` (a teacher's :class:`MatchingModule`) is wrapped whole, as by ``strategy="ddp"``.
"""

from __future__ import annotations

from lightning.pytorch.overrides.distributed import _register_ddp_comm_hook
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch import nn


class RealUIDDDPStrategy(DDPStrategy):
    """DDPStrategy that wraps ``module.ddp_networks()`` separately and leaves everything else (the teacher) alone."""

    strategy_name = "realuid_ddp"

    def configure_ddp(self) -> None:
        module = self.model
        networks = getattr(module, "ddp_networks", None)
        if networks is None:
            super().configure_ddp()
            return
        module._ddp_wrappers = {name: self._wrap(net) for name, net in networks().items()}

    def _wrap(self, net: nn.Module) -> nn.Module:
        """DDP(net) with this strategy's DDP arguments; initial weights broadcast from rank 0."""
        wrapper = self._setup_model(net)
        if self._ddp_comm_hook is not None:
            _register_ddp_comm_hook(wrapper, self._ddp_comm_state, self._ddp_comm_hook, self._ddp_comm_wrapper)
        return wrapper

    def teardown(self) -> None:
        module = self.lightning_module
        if module is not None and "_ddp_wrappers" in module.__dict__:
            module._ddp_wrappers = {}  # the module goes on without DDP (a later fit wraps it again)
        super().teardown()


if RealUIDDDPStrategy.strategy_name not in StrategyRegistry:
    StrategyRegistry.register(RealUIDDDPStrategy.strategy_name, RealUIDDDPStrategy,
                              description="DDP with one wrapper per trained network of a RealUIDModule (the teacher unwrapped)")
