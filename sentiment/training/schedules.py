"""Learning-rate schedules that follow the plan of the run they are in, resumed or not.

``OneCycle`` is torch's ``OneCycleLR`` (cosine annealing up to the peak and down, beta1 of Adam cycled the other way),
step for step the same numbers, with three differences a Lightning run needs: its length is the plan of the run
that builds it (``trainer.estimated_stepping_batches``), which a checkpoint's state does not overwrite, so a run
resumed with more epochs stretches its cycle over them instead of failing past the old end; a plan too short to warm
up (one step or so) starts at the peak instead of dividing by zero; and past its end (a plan shortened) it stays at
the minimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def _cosine(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycle(torch.optim.lr_scheduler.LRScheduler):
    """The one-cycle policy (Smith & Topin, 2018) over ``total_steps`` optimizer steps.

    Args:
        optimizer: the optimizer; each parameter group peaks at its own ``max_lr``.
        max_lr: the peak learning rate of each parameter group.
        total_steps: the steps the run plans (at least 1).
        pct_start: the share of the steps spent warming up.
        div_factor: the learning rate starts at ``max_lr / div_factor``.
        final_div_factor: and ends at that divided by ``final_div_factor``.
        base_momentum: beta1 (or momentum) at the peak learning rate.
        max_momentum: beta1 (or momentum) at the start and the end.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: Sequence[float], total_steps: int,
                 pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 base_momentum: float = 0.85, max_momentum: float = 0.95) -> None:
        self.total_steps, self.pct_start = max(1, int(total_steps)), pct_start
        for group, peak in zip(optimizer.param_groups, max_lr, strict=True):
            group.update(initial_lr=peak / div_factor, max_lr=peak, min_lr=peak / div_factor / final_div_factor,
                         base_momentum=base_momentum, max_momentum=max_momentum)
            self._set_momentum(group, max_momentum)
        super().__init__(optimizer)

    @staticmethod
    def _set_momentum(group: dict[str, Any], value: float) -> None:
        if "betas" in group:
            group["betas"] = (value, *group["betas"][1:])
        elif "momentum" in group:
            group["momentum"] = value

    def get_lr(self) -> list[float]:
        step, warm_end = self.last_epoch, self.pct_start * self.total_steps - 1
        lrs = []
        for group in self.optimizer.param_groups:
            if warm_end > 0 and step <= warm_end:  # warming up: to the peak, momentum down
                pct = step / warm_end
                lr, momentum = (_cosine(group["initial_lr"], group["max_lr"], pct),
                                _cosine(group["max_momentum"], group["base_momentum"], pct))
            else:  # annealing: from the peak to the minimum, momentum up; past the plan's end, at the minimum
                start = max(warm_end, 0.0)
                pct = min(1.0, (step - start) / max(self.total_steps - 1 - start, 1e-12))
                lr, momentum = (_cosine(group["max_lr"], group["min_lr"], pct),
                                _cosine(group["base_momentum"], group["max_momentum"], pct))
            self._set_momentum(group, momentum)
            lrs.append(lr)
        return lrs

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # where the run stands, from the checkpoint; how long it runs, from the plan of the run resuming it
        plan = self.total_steps
        super().load_state_dict(state_dict)
        self.total_steps = plan
        # the optimizer was restored with the learning rate of the old plan: the next step takes the new plan's
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
