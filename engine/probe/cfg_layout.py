"""The classifier-free-guidance layout of a run's batch: which items are conditional.

Diffusers' AudioLDM2 and Stable Audio pipelines (and the embedded model) stack the batch as
``[uncond, cond]`` (order ``"uncond_cond"``); ACE-Step and stable-audio-tools use
``[cond, uncond]``. Without guidance (``guidance <= 1``, distilled models) there is no
unconditional half: the batch is one conditional item per prompt. Every place that picks the
conditional item or a CFG half asks a :class:`CfgLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.types import EngineError

CFG_ORDERS: tuple[str, ...] = ("uncond_cond", "cond_uncond")
HALVES: tuple[str, ...] = ("both", "cond", "uncond")


def check_halves(halves: str) -> str:
    """``halves`` if it is ``both``, ``cond`` or ``uncond``; an :class:`EngineError` otherwise."""
    if halves not in HALVES:
        raise EngineError(f"unknown CFG half {halves!r}: use both, cond or uncond")
    return halves


@dataclass(frozen=True)
class CfgLayout:
    """Batch layout of one run: ``order`` of the halves and whether guidance is on."""

    order: str = "uncond_cond"
    guided: bool = True

    def __post_init__(self) -> None:
        if self.order not in CFG_ORDERS:
            raise EngineError(f"unknown CFG order {self.order!r}; use 'uncond_cond' or 'cond_uncond'")

    @classmethod
    def of(cls, backend: Any, request: Any) -> CfgLayout:
        """The layout of ``backend``'s pipeline (its ``cfg_order``) for ``request``'s guidance."""
        return cls(getattr(backend, "cfg_order", "uncond_cond"), float(request.guidance) > 1.0)

    @property
    def copies(self) -> int:
        """Batch items per prompt: 2 with guidance, 1 without."""
        return 2 if self.guided else 1

    def cond_slice(self, batch: int) -> slice:
        """The conditional items of a batch of ``batch``."""
        return self.items(batch, "cond")

    def cond_index(self, batch: int) -> int:
        """The first conditional item."""
        return self.cond_slice(batch).start

    def cond_item(self, batch: int) -> slice:
        """The first conditional item as a one-item slice (what capture records)."""
        start = self.cond_index(batch)
        return slice(start, start + 1)

    def items(self, batch: int, halves: str) -> slice:
        """The items of ``halves`` (``both``, ``cond`` or ``uncond``) in a batch of ``batch``."""
        if check_halves(halves) == "both":
            return slice(0, batch)
        if not self.guided:
            return slice(0, batch) if halves == "cond" else slice(0, 0)
        half = batch // 2
        first = "cond" if self.order == "cond_uncond" else "uncond"
        return slice(0, half) if halves == first else slice(half, batch)
