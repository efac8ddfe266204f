"""The recorder of one run: reduces attention on the device, hands frames to the observer, keeps
them within the memory budget (or streams them to disk), and flags non-finite attention.

Capture processors call :meth:`FrameRecorder.add` with fp32 ``(heads, Q, K)`` probabilities; the
recorder crops queries to the site's lattice (``query_slices``), computes the padding "sink mass"
where a context has padded keys (and, with ``drop_pads``, drops those keys before storage), reduces to the head mean unless per-head capture was asked for,
casts to fp16 and buffers the tensors on the device. :meth:`flush` (called at the end of every
denoising step) moves them to the host in one go, checks them for NaN/inf, stores them and
delivers an :class:`~engine.types.AttentionFrame` per (step, site) to the observer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.probe.cfg_layout import CfgLayout
from engine.probe.frame_store import FrameStoreWriter
from engine.probe.run_context import RunContext
from engine.recipe import NAN_POLICIES
from engine.types import AttentionFrame, EngineError, RunObserver, Site


@dataclass
class CapturePlan:
    """What one run records: sites, steps, head reduction, and where frames go. ``budget_bytes`` is
    the frames' share of the memory budget (the maps' share taken off)."""

    sites: list[Site]
    steps: list[int]
    per_head: bool
    budget_bytes: int
    stream: bool = False
    estimate_bytes: int = 0  # the frames (and sink mass) recorded
    maps_bytes: int = 0  # the maps the caller keeps (``request.maps``), already taken off budget_bytes
    warnings: list[str] = field(default_factory=list)

    @property
    def site_names(self) -> set[str]:
        return {s.name for s in self.sites}


class FrameRecorder:
    """Collects the attention frames of one run (see the module docstring)."""

    def __init__(
        self,
        run_id: int,
        plan: CapturePlan,
        observer: RunObserver,
        run: RunContext,
        stream_dir: str | None = None,
        nan_policy: str = "warn",
    ) -> None:
        if nan_policy not in NAN_POLICIES:
            raise EngineError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.run_id = run_id
        self.plan = plan
        self.observer = observer
        self.run = run
        self.nan_policy = nan_policy
        self._sites = {s.name: s for s in plan.sites}
        self._steps = set(plan.steps)
        self.lattices: dict[str, tuple[int, int]] = {}
        self.query_slices: dict[str, slice] = {}
        self.pad_keys: dict[str, torch.Tensor] = {}  # context -> bool (K,) True at padded keys
        self.drop_pads = False  # True: padded keys are left out of stored frames (sink mass kept)
        self.frames: dict[tuple[int, str], np.ndarray] = {}
        self.sink_mass: dict[tuple[int, str], np.ndarray] = {}
        self.nonfinite: dict[str, list[int]] = {}
        self.kept_bytes = 0
        self.dropped = 0
        self._pending: list[tuple[int, str, torch.Tensor, torch.Tensor | None]] = []
        self.writer = FrameStoreWriter(Path(stream_dir)) if plan.stream and stream_dir else None

    # -- called from hooks and processors -------------------------------------------------
    @property
    def cfg(self) -> CfgLayout:
        """The run's CFG layout (which item is the conditional one)."""
        return self.run.cfg

    def wants(self, site: str) -> bool:
        return self.run.clock.step in self._steps and site in self._sites

    def set_lattice(self, site: str, lattice: tuple[int, int], query_slice: slice) -> None:
        self.lattices[site] = (int(lattice[0]), int(lattice[1]))
        self.query_slices[site] = query_slice

    def add(self, site: str, probs: torch.Tensor) -> None:
        """Record fp32 ``(heads, Q, K)`` probabilities of ``site`` at the current step."""
        qs = self.query_slices.get(site)
        if qs is not None:
            probs = probs[:, qs]
        pad = self.pad_keys.get(self._sites[site].context)
        sink = None
        if pad is not None and pad.shape[0] == probs.shape[-1]:
            pad = pad.to(probs.device)
            sink = probs[..., pad].sum(-1).mean(0)
            if self.drop_pads:
                probs = probs[..., ~pad]
        reduced = probs if self.plan.per_head else probs.mean(0, keepdim=True)
        self._pending.append((self.run.clock.step, site, reduced.to(torch.float16), sink))

    # -- host side ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Move pending frames to the host, check, store and deliver them."""
        pending, self._pending = self._pending, []
        for step, site, tensor, sink in pending:
            array = tensor.detach().to("cpu").numpy()
            array.setflags(write=False)
            if not np.isfinite(array).all():
                self.nonfinite.setdefault(site, []).append(step)
                if self.nan_policy == "raise":
                    raise EngineError(
                        f"attention has NaN/inf at site {site}, step {step}; "
                        "try float32 or fewer steps, or set nan_policy='warn' to go on"
                    )
            if sink is not None:
                sink_np = sink.detach().to("cpu", torch.float32).numpy()
                sink_np.setflags(write=False)
                self.sink_mass[(step, site)] = sink_np
                self.kept_bytes += sink_np.nbytes
            self._store(step, site, array)
            info = self._sites[site]
            self.observer.on_frame(
                AttentionFrame(
                    run_id=self.run_id,
                    step=step,
                    site=site,
                    probs=array,
                    lattice=self.lattices.get(site, (array.shape[1], 1)),
                    context=info.context,
                    head_mean=not self.plan.per_head,
                )
            )

    def _store(self, step: int, site: str, array: np.ndarray) -> None:
        lattice = self.lattices.get(site, (array.shape[1], 1))
        if self.writer is not None:
            self.writer.write(step, site, array, lattice, self._sites[site].context,
                              not self.plan.per_head)
        if self.kept_bytes + array.nbytes <= self.plan.budget_bytes:
            self.frames[(step, site)] = array
            self.kept_bytes += array.nbytes
        else:
            self.dropped += 1

    def finish(self) -> list[str]:
        """Flush, close the store and return the warnings of the recording."""
        self.flush()
        warnings: list[str] = []
        if self.writer is not None:
            self.writer.close()
        for site, steps in self.nonfinite.items():
            warnings.append(f"attention has NaN/inf at site {site}, steps {steps}")
        if self.dropped:
            where = (
                f"all frames are in {self.writer.folder} (analyze reads its maps from there)"
                if self.writer is not None
                else "they were not kept"
            )
            warnings.append(
                f"{self.dropped} frames did not fit the memory budget of "
                f"{human_bytes(self.plan.budget_bytes)}; {where}"
            )
        return warnings

    def stored_tokens(self, tokens: dict[str, list[str]]) -> dict[str, list[str]]:
        """``tokens`` in the key order of the stored frames (padded keys left out with ``drop_pads``)."""
        return without_padded_keys(tokens, self.pad_keys) if self.drop_pads else tokens


def without_padded_keys(tokens: dict[str, list[str]], pad_keys: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """``tokens`` with the keys marked in ``pad_keys`` (context -> bool per key) left out."""
    out = dict(tokens)
    for context, pad in pad_keys.items():
        words = tokens.get(context)
        if words is not None and len(words) == pad.shape[0]:
            out[context] = [w for w, p in zip(words, pad.tolist(), strict=True) if not p]
    return out


def human_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1 (B, KB, MB, GB)."""
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
