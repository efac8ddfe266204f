"""Wall time spent inside attention calls (an intervention that wraps every site it is given).

Put it **after** LSAC in ``GenerationRequest.interventions`` so that it times what LSAC computes;
attention capture wraps outside it and is not counted. On CUDA it synchronises before and after
each call so that the times are real.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from engine.probe.site_processors import SiteCall, site_processor_for


class AttentionTimer:
    """Sums the seconds spent in each site's attention calls (``seconds[site]``)."""

    def __init__(self, sites: list[str] | None = None) -> None:
        self.sites = None if sites is None else set(sites)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._cuda = False

    def begin(self, backend, request) -> None:
        self.seconds.clear()
        self.calls.clear()
        self._cuda = str(getattr(backend, "device", "cpu")).startswith("cuda")

    def wrap(self, site: str, module, inner):
        if self.sites is not None and site not in self.sites:
            return None
        return site_processor_for(site, inner, self._handle)

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def describe(self) -> dict[str, Any]:
        return {"type": "attention_timer", "total_s": self.total}

    def _handle(self, call: SiteCall) -> torch.Tensor:
        site = call.site
        if self._cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = call.run_inner()
        if self._cuda:
            torch.cuda.synchronize()
        self.seconds[site] = self.seconds.get(site, 0.0) + time.perf_counter() - start
        self.calls[site] = self.calls.get(site, 0) + 1
        return out
