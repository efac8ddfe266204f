"""What the probes of one run share: the denoising step clock, the CFG layout, the schedule.

The backend creates one :class:`RunContext` per run; its step pre-hook on the denoiser ticks
:attr:`RunContext.clock` once per denoiser call (one call per denoising step in the supported
pipelines), and the recorder and every intervention read the step from that clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.probe.cfg_layout import CfgLayout


class StepClock:
    """The current denoising step: ``-1`` before the first denoiser call, then ``0, 1, …``."""

    def __init__(self) -> None:
        self.step = -1

    def tick(self) -> int:
        """Advance to the next step and return it."""
        self.step += 1
        return self.step

    @property
    def started(self) -> int:
        """The step, or 0 before the first call (for lookups that need a valid index)."""
        return max(0, self.step)


@dataclass
class RunContext:
    """One run's shared state (see the module docstring); ``mel`` is set by backends that
    produce one."""

    cfg: CfgLayout
    clock: StepClock = field(default_factory=StepClock)
    timesteps: np.ndarray | None = None
    sigmas: np.ndarray | None = None
    mel: np.ndarray | None = None
