"""Conditioning ablations of cross-attention (after the orthogonal probing of the LSAC paper §2.1).

* ``"zero"`` (Zeroed CA): the layer's attention output is replaced by zeros, so the text adds
  nothing to the residual stream there.
* ``"uniform"`` (Forced Uniform): the softmax weights are forced to ``1/K`` over the keys the
  mask lets through, so every query receives the plain mean of the values: the layer still
  carries the prompt's content but no longer *where* it goes. On Stable Audio the padded T5
  positions are unmasked zero vectors and count as keys, as in the model itself.

Both act on every CFG item and on the chosen layers (all cross-attention layers by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engine.interventions.layers import RunState
from engine.interventions.processors import intervention_processor_for
from engine.types import EngineError

ABLATION_MODES = ("zero", "uniform")


class Ablation(RunState):
    """Intervention: ``mode`` ``"zero"`` or ``"uniform"`` at ``sites``."""

    def __init__(self, sites: Sequence[str], mode: str = "zero") -> None:
        super().__init__()
        if mode not in ABLATION_MODES:
            raise EngineError(f"unknown ablation {mode!r}: use zero or uniform")
        if not sites:
            raise EngineError("no layers to ablate: choose at least one layer or 'all'")
        self.sites = list(sites)
        self.mode = mode

    def wrap(self, site: str, module, inner):
        if site not in self.sites:
            return None
        if self.mode == "uniform":
            return intervention_processor_for(site, inner, uniform=True)
        return intervention_processor_for(site, inner, output_hook=torch.zeros_like)

    def describe(self) -> dict[str, Any]:
        return {"type": "ablation", "mode": self.mode, "sites": self.sites}

