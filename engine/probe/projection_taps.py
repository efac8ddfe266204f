"""Keep the query and key projections a stock processor computes, so capture does not compute
them again.

Capture records the conditional item's attention probabilities beside the processor's own
output. Recomputing them from scratch repeats the ``to_q`` projection (and ``to_k``/``to_kv``):
on Stable Audio 3, whose differential cross-attention projects to twice the width, that was
~20 % of a denoising step. :class:`ProjectionTaps` hooks the site's projection modules while the
wrapped processor runs and hands their outputs back, sliced to the items wanted; it is used only
when the wrapped processor is one of diffusers' own (which project once per call: the outputs
are exactly what :class:`~engine.probe.attention_core.AttentionCall` would compute) and each
projection ran exactly once; otherwise the caller computes them as before.
"""

from __future__ import annotations

from typing import Any

import torch


def stock_processor(proc: Any) -> bool:
    """``proc`` is one of diffusers' processors (not an intervention's wrapper)."""
    return type(proc).__module__.startswith("diffusers.")


class ProjectionTaps:
    """``with ProjectionTaps(attn): ...`` records the outputs of ``attn.to_q`` and of its key
    projection (``to_k``, or Stable Audio 3's fused ``to_kv``) during the block."""

    def __init__(self, attn: Any) -> None:
        self.modules = {"q": getattr(attn, "to_q", None), "k": getattr(attn, "to_k", None) or getattr(attn, "to_kv", None)}
        self.seen: dict[str, list[torch.Tensor]] = {"q": [], "k": []}
        self._hooks: list[Any] = []

    def __enter__(self) -> ProjectionTaps:
        for name, module in self.modules.items():
            if isinstance(module, torch.nn.Module):
                self._hooks.append(module.register_forward_hook(
                    lambda _m, _i, out, name=name: self.seen[name].append(out)))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def projections(self, items: slice | None, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The query and key projections of batch ``items`` (of ``batch``), each None unless its
        module ran exactly once on the whole batch."""
        out = []
        for name in ("q", "k"):
            seen = self.seen[name]
            ok = len(seen) == 1 and isinstance(seen[0], torch.Tensor) and seen[0].shape[0] == batch
            out.append((seen[0] if items is None else seen[0][items]) if ok else None)
        return out[0], out[1]
