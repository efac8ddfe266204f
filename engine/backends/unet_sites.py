"""Site geometry shared by the UNet families (AudioLDM2, the embedded model).

A UNet attention site ``<block>.attentions.<i>.transformer_blocks.<j>.attn<k>`` sits in a
``Transformer2DModel`` whose input is ``(B, C, H=time, W=mel)``; its queries are that lattice in
time-major order. Each down level halves both axes with a stride-2, padding-1 convolution
(``ceil(n / 2)``); the mid block sits at the deepest level, up blocks climb back.
"""

from __future__ import annotations

import torch

from engine.backends.diffusers_backend import parse_site
from engine.types import EngineError


class UNetSitesMixin:
    """Lattice hooks and planned lattices of UNet sites; needs ``denoiser`` and ``_level0_lattice``."""

    def _level0_lattice(self, duration: float) -> tuple[int, int]:
        """``(T, F)`` of the UNet input for ``duration`` seconds (the finest attention level)."""
        raise NotImplementedError

    def _lattice_parent(self, name: str) -> str:
        return name.split(".transformer_blocks.")[0]

    def _lattice_from_input(self, name: str, hidden: torch.Tensor, request) -> tuple[tuple[int, int], None]:
        if hidden.ndim != 4:
            raise EngineError(f"site {name}: expected a (B, C, time, mel) input, got {tuple(hidden.shape)}")
        return (int(hidden.shape[2]), int(hidden.shape[3])), None

    def _level(self, block: str) -> int:
        n_down = len(self.denoiser.down_blocks)
        kind, _, idx = block.partition(".")
        if kind == "down_blocks":
            return int(idx)
        if kind == "mid_block":
            return n_down - 1
        return n_down - 1 - int(idx)

    def site_level(self, name: str) -> int:
        """UNet level of site ``name`` (0 = the input resolution)."""
        match = parse_site(name)
        if match is None:
            raise EngineError(f"{name} is not an attention site of the {self.family} UNet")
        return self._level(match["block"])

    def planned_lattice(self, name: str, duration: float) -> tuple[int, int]:
        """Query lattice ``(T_l, F_l)`` of site ``name`` for ``duration`` s, from the architecture."""
        t, f = self._level0_lattice(duration)
        for _ in range(self.site_level(name)):
            t, f = -(-t // 2), -(-f // 2)
        return t, f
