"""When instruments log: dense early, sparse later, counted on ``trainer.global_step``."""

from __future__ import annotations

import math


class LogSchedule:
    """Log at step 0, then with an interval that grows tenfold per decade of steps.

    The interval at step ``s`` is ``10 ** floor(log10(s))`` clipped to
    ``[min_interval, max_interval]``: with the defaults (1, 1000) that is every step up to
    10, every 10 up to 100, every 100 up to 1000, then every 1000. Early training, where
    vanishing gradients and dying units show, is sampled finely; long runs stay cheap.
    """

    def __init__(self, min_interval: int = 1, max_interval: int = 1000) -> None:
        if min_interval < 1 or max_interval < min_interval:
            raise ValueError(
                "need 1 <= min_interval <= max_interval, got "
                f"min_interval={min_interval}, max_interval={max_interval}"
            )
        self.min_interval = min_interval
        self.max_interval = max_interval

    def interval(self, step: int) -> int:
        """The logging interval in force at ``step``."""
        decade = 10 ** int(math.log10(step)) if step > 0 else 1
        return min(self.max_interval, max(self.min_interval, decade))

    def __call__(self, step: int) -> bool:
        return step == 0 or step % self.interval(step) == 0
