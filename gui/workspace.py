"""The GUI's shared state: the runs held in memory, the current one, and what the views select.

Docks read from a :class:`Workspace` and change it through its methods; its signals tell every
dock what changed. Lives in the GUI thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.backends.base import RunResult
from engine.types import AttentionFrame, GenerationRequest, MelSpec, Site
from gui.time_view import TimeView

MAX_HISTORY = 12


@dataclass
class RunData:
    """One run as the GUI holds it: live frames while it goes on, the result once finished."""

    run_id: int
    model: str
    device: str
    request: GenerationRequest
    sites: list[Site] = field(default_factory=list)
    mel_spec: MelSpec | None = None
    tokens: dict[str, list[str]] = field(default_factory=dict)
    lattices: dict[str, tuple[int, int]] = field(default_factory=dict)
    frames: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    sigmas: np.ndarray | None = None
    result: RunResult | None = None
    status: str = "queued"  # queued, running, done, cancelled, failed
    steps_done: int = 0
    message: str = ""
    started_at: float = field(default_factory=time.time)

    @property
    def site_names(self) -> list[str]:
        recorded = {s for _, s in self.frames}
        return [s.name for s in self.sites if s.name in recorded] or sorted(recorded)

    @property
    def steps(self) -> list[int]:
        return sorted({s for s, _ in self.frames})

    def site(self, name: str) -> Site | None:
        return next((s for s in self.sites if s.name == name), None)

    def context_of(self, name: str) -> str:
        site = self.site(name)
        return site.context if site else (next(iter(self.tokens), "text"))

    def tokens_for(self, site_name: str) -> list[str]:
        toks = self.tokens.get(self.context_of(site_name))
        if toks is None and self.tokens:
            toks = next(iter(self.tokens.values()))
        return list(toks or [])

    def duration(self) -> float:
        if self.result is not None and self.result.sample_rate:
            return len(self.result.audio) / self.result.sample_rate
        return float(self.request.duration)

    def label(self) -> str:
        prompt = self.request.prompt if len(self.request.prompt) < 40 else self.request.prompt[:37] + "..."
        return f"#{self.run_id} [{self.status}] {self.model} · “{prompt}” · seed {self.request.seed}"

    @classmethod
    def from_result(cls, result: RunResult, model: str, device: str, request: GenerationRequest) -> RunData:
        run = cls(result.run_id, model, device, request)
        run.apply_result(result)
        return run

    def apply_result(self, result: RunResult) -> None:
        self.result = result
        self.sites = list(result.sites)
        self.mel_spec = result.mel_spec
        self.tokens = dict(result.tokens)
        self.lattices = dict(result.lattices)
        self.frames = dict(result.frames)
        self.sigmas = np.asarray(result.sigmas)
        self.steps_done = len(result.sigmas)
        self.status = "done"


@dataclass(frozen=True)
class Selection:
    """What the heatmap shows. ``head`` None is the head mean; ``tokens`` None pools every token."""

    mode: str = "site"  # "site" or "aggregate"
    site: str | None = None
    step: int = 0
    head: int | None = None
    tokens: tuple[int, ...] | None = None
    pooling: str = "max"  # mean over *all* keys is the constant 1/K (softmax rows sum to 1)
    aggregator: str = "mean"
    weighting: str = "uniform"
    follow_live: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "site": self.site,
            "step": self.step,
            "head": self.head,
            "tokens": list(self.tokens) if self.tokens is not None else None,
            "pooling": self.pooling,
            "aggregator": self.aggregator,
            "weighting": self.weighting,
            "follow_live": self.follow_live,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        toks = d.get("tokens")
        return cls(
            mode=str(d.get("mode", "site")),
            site=d.get("site"),
            step=int(d.get("step", 0)),
            head=d.get("head"),
            tokens=tuple(int(t) for t in toks) if toks is not None else None,
            pooling=str(d.get("pooling", "max")),
            aggregator=str(d.get("aggregator", "mean")),
            weighting=str(d.get("weighting", "uniform")),
            follow_live=bool(d.get("follow_live", True)),
        )


class Workspace(QObject):
    """Runs in memory, the current run, the selection, the head masks and the shared time view."""

    currentChanged = Signal()  # another run became current (new, reopened, loaded)
    framesAdded = Signal(object)  # list[(step, site)] added to the current run
    runUpdated = Signal()  # the current run's status/result changed
    selectionChanged = Signal()
    headMasksChanged = Signal()
    historyChanged = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.history: list[RunData] = []
        self.current: RunData | None = None
        self.selection = Selection()
        self.head_masks: dict[str, list[bool]] = {}
        self.time = TimeView(self)  # the time window and cursor of every time plot
        self.kept: frozenset[int] = frozenset()  # run ids the history must not drop (the A/B playing)

    # ---- runs ------------------------------------------------------------------------------
    def add_run(self, run: RunData, make_current: bool = True) -> None:
        """Append ``run`` (replacing one of its id); past :data:`MAX_HISTORY` runs the oldest go,
        except those in :attr:`kept` (an A/B's reference run stays while its B is made)."""
        self.history = [r for r in self.history if r.run_id != run.run_id]
        self.history.append(run)
        excess = len(self.history) - MAX_HISTORY
        if excess > 0:
            gone = {id(r) for r in [r for r in self.history[:-1] if r.run_id not in self.kept][:excess]}
            self.history = [r for r in self.history if id(r) not in gone]
        self.historyChanged.emit()
        if make_current:
            self.set_current(run)

    def find(self, run_id: int) -> RunData | None:
        return next((r for r in self.history if r.run_id == run_id), None)

    def set_current(self, run: RunData) -> None:
        self.current = run
        names = run.site_names or [s.name for s in run.sites if s.kind == "cross"]
        site = self.selection.site if self.selection.site in names else (names[0] if names else None)
        self.selection = replace(self.selection, site=site, step=max(run.steps, default=0), head=None, tokens=None)
        self.time.set_duration(run.duration())
        self.currentChanged.emit()
        self.selectionChanged.emit()

    def add_frames(self, run_id: int, frames: list[AttentionFrame]) -> None:
        run = self.find(run_id)
        if run is None:
            return
        keys = []
        for f in frames:
            run.frames[(f.step, f.site)] = f.probs
            run.lattices[f.site] = tuple(f.lattice)
            keys.append((f.step, f.site))
        if run is self.current and keys:
            if self.selection.site is None:
                self.selection = replace(self.selection, site=keys[0][1])
            if self.selection.follow_live:
                self.selection = replace(self.selection, step=max(s for s, _ in keys))
            self.framesAdded.emit(keys)
            self.selectionChanged.emit()

    def update_run(self, run: RunData) -> None:
        self.historyChanged.emit()
        if run is self.current:
            self.time.set_duration(run.duration())
            self.runUpdated.emit()

    # ---- selection -------------------------------------------------------------------------
    def select(self, **changes: Any) -> None:
        new = replace(self.selection, **changes)
        if new != self.selection:
            self.selection = new
            self.selectionChanged.emit()

    def step_by(self, delta: int) -> None:
        run = self.current
        if run is None or not run.steps:
            return
        steps = run.steps
        i = steps.index(self.selection.step) if self.selection.step in steps else len(steps) - 1
        self.select(step=steps[int(np.clip(i + delta, 0, len(steps) - 1))], follow_live=False)

    def site_by(self, delta: int) -> None:
        run = self.current
        if run is None or not run.site_names:
            return
        names = run.site_names
        i = names.index(self.selection.site) if self.selection.site in names else 0
        self.select(site=names[int(np.clip(i + delta, 0, len(names) - 1))], head=None, tokens=None)

    # ---- head masks ------------------------------------------------------------------------
    def set_head_mask(self, site: str, mask: list[bool]) -> None:
        self.head_masks[site] = [bool(b) for b in mask]
        self.headMasksChanged.emit()

    def set_head_masks(self, masks: dict[str, list[bool]]) -> None:
        self.head_masks = {k: [bool(b) for b in v] for k, v in masks.items()}
        self.headMasksChanged.emit()
