"""Head mask: ablate chosen heads of attention sites during generation.

``GenerationRequest.head_mask`` maps a site to one flag per head; a head marked ``False`` has its
contribution removed: its slice of the attention output ``(B, heads, Q, d)`` is zeroed before the
heads are merged and projected by ``to_out`` (every CFG item), through the intervention hook
point (:func:`engine.probe.attention_core.attend`'s ``head_hook``). Sites whose flags are all
``True`` are left alone, so an all-on mask is the unmasked run bit for bit. A masked site computes
its attention with the core instead of the stock processor, so the mask wraps the stock processors
(it is placed first by :func:`engine.probe.intervention.interventions_of`); output edits (steering)
wrap it, and K/V or uniform-weight interventions on the same site merge with it
(:func:`engine.interventions.processors.intervention_processor_for`). LSAC cannot cache a masked site.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.interventions.processors import intervention_processor_for
from engine.recipe import HeadMask as HeadFlags
from engine.recipe import check_head_mask
from engine.types import EngineError


class HeadMask:
    """Intervention: zero the heads marked ``False`` in ``mask`` (site -> flags)."""

    def __init__(self, mask: HeadFlags) -> None:
        self.mask: HeadFlags = check_head_mask(mask) or {}

    def begin(self, backend: Any, request: Any) -> None:
        heads = {s.name: s.heads for s in backend.sites()}
        for site, flags in self.mask.items():
            if site not in heads:
                raise EngineError(f"head mask names unknown site {site!r}: pick names from `python main.py sites`")
            if len(flags) != heads[site]:
                raise EngineError(f"head mask of {site} has {len(flags)} flags, the site has {heads[site]} heads")

    def wrap(self, site: str, module: torch.nn.Module, inner: Any) -> Any | None:
        flags = self.mask.get(site)
        if flags is None or all(flags):
            return None
        if len(flags) != module.heads:
            raise EngineError(f"head mask of {site} has {len(flags)} flags, the site has {module.heads} heads")
        off = torch.tensor([not f for f in flags]).view(1, -1, 1, 1)

        def zero_heads(out: torch.Tensor) -> torch.Tensor:
            return out.masked_fill(off.to(out.device), 0.0)

        return intervention_processor_for(site, inner, head_hook=zero_heads)

    def describe(self) -> dict[str, Any]:
        return {"type": "head_mask",
                "ablated": {site: [h for h, on in enumerate(flags) if not on] for site, flags in self.mask.items()}}
