"""Learning-rate schedules."""
from typing import List, Sequence, Union

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, StepLR

__all__ = ["PolyLR", "build_scheduler", "retarget"]


class PolyLR(LRScheduler):
    """``lr = base_lr * (1 - iter / max_iters) ** power``, never below ``min_lr``.

    The factor is clamped at 0 past ``max_iters`` (the original went negative, and complex for
    fractional powers, when training ran longer than planned).
    """

    def __init__(self, optimizer: Optimizer, max_iters: int, power: float = 0.9, last_epoch: int = -1,
                 min_lr: float = 1e-6):
        self.power = power
        self.max_iters = max_iters
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        factor = max(1.0 - self.last_epoch / self.max_iters, 0.0) ** self.power
        return [max(base_lr * factor, self.min_lr) for base_lr in self.base_lrs]


def build_scheduler(optimizer: Optimizer, policy: str, total_itrs: int, step_size: int) -> LRScheduler:
    """'poly' (power 0.9 over ``total_itrs``) or 'step' (x0.1 every ``step_size``), as the original."""
    if policy == "poly":
        return PolyLR(optimizer, total_itrs, power=0.9)
    if policy == "step":
        return StepLR(optimizer, step_size=step_size, gamma=0.1)
    raise ValueError(f"unknown lr_policy {policy!r}; use poly or step")


def retarget(scheduler: Union[PolyLR, StepLR], total_itrs: int, step_size: int, base_lrs: Sequence[float],
             weight_decay: float) -> None:
    """After loading a checkpoint's optimizer and scheduler state, follow this run's --total_itrs / --step_size,
    learning rates (``base_lrs``, one per parameter group) and ``weight_decay`` (main.py says what changed).

    A scheduler's and an optimizer's state_dicts carry the settings they were built with, which would otherwise
    silently override the ones asked for when continuing training. The optimizer's rates are set at once, so the
    first resumed step already uses the new schedule: the rate the new settings give at this iteration (for
    'step', ``base_lr * 0.1 ** (iteration // step_size)``, as if they had applied from the start).
    """
    if isinstance(scheduler, PolyLR):
        scheduler.max_iters = total_itrs
    else:
        scheduler.step_size = step_size
    scheduler.base_lrs = list(base_lrs)
    if isinstance(scheduler, PolyLR):
        rates = scheduler.get_lr()
    else:  # StepLR, the other schedule build_scheduler makes
        rates = [base_lr * scheduler.gamma ** (scheduler.last_epoch // step_size) for base_lr in scheduler.base_lrs]
    for group, rate, base_lr in zip(scheduler.optimizer.param_groups, rates, scheduler.base_lrs):
        group.update(lr=rate, initial_lr=base_lr, weight_decay=weight_decay)
    scheduler._last_lr = rates  # what get_last_lr() and the log report
