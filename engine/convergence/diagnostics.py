"""Per-site, per-step attention entropy of a run; its step-to-step change; stable / fast sites.

SAM-Audio probing (Sec. 2.2) classifies layers by the *entropic rate of change*: with ``H_l(t)``
the attention entropy of site ``l`` at step ``t`` (averaged over heads and queries, nats),
``D_l`` is the mean of ``|H_l(t) − H_l(t−1)|`` over the late transitions (by default the last
half), and sites with ``D_l`` below the median (``quantile=0.5``) are *stable*, the others
*fast*. Cross- and self-attention sites are classified separately by default (``group="kind"``)
because their entropies live on different scales (``log K`` differs); ``group="all"`` pools them.

Two sources: :func:`diagnose` streams the entropy during a run with :class:`EntropyProbe` (no
frames are stored, so self-attention's ``Q × Q`` maps cost no memory beyond one call), and
:func:`report_from_frames` reads recorded frames (head-mean frames give the entropy of the
head-mean attention, which is lower-bounded differently — prefer per-head capture or streaming).
Entropy is taken on the conditional CFG item over every query the site computes (for Stable
Audio that includes the prepended global token and the latent frames past the requested
duration, which the model also computes); see :mod:`.entropy` for padded keys.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.convergence.entropy import mean_abs_change, mean_entropy, mean_entropy_torch
from engine.probe.attention_core import item_probs
from engine.probe.cfg_layout import CfgLayout
from engine.probe.run_context import RunContext
from engine.probe.site_processors import SiteCall, site_processor_for
from engine.types import EngineError, GenerationRequest

PAD_POLICIES = ("include", "renormalise")
GROUPS = ("kind", "all")


@dataclass(frozen=True)
class SiteShape:
    """Sizes of one attention call of a site (for FLOP counts and cache sizes)."""

    batch: int
    queries: int
    keys: int
    d_query: int
    d_context: int
    heads: int
    kv_heads: int
    head_dim: int
    d_out: int


def shape_of_call(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> SiteShape:
    """The :class:`SiteShape` of one call from its module and inputs."""
    hs = hidden_states
    if hs.ndim == 4:
        b, _c, h, w = hs.shape
        q = h * w
    else:
        b, q = hs.shape[0], hs.shape[1]
    ctx = hs if encoder_hidden_states is None else encoder_hidden_states
    k = q if encoder_hidden_states is None else ctx.shape[1]
    head_dim = attn.to_q.out_features // attn.heads
    return SiteShape(batch=int(b), queries=int(q), keys=int(k), d_query=attn.to_q.in_features,
                     d_context=attn.to_k.in_features, heads=int(attn.heads),
                     kv_heads=attn.to_k.out_features // head_dim, head_dim=int(head_dim),
                     d_out=attn.to_out[0].out_features)


class EntropyProbe:
    """An intervention that leaves outputs untouched and records the mean attention entropy of
    the conditional item for every wrapped site and step (``values[(step, site)]``)."""

    def __init__(self, sites: list[str] | None = None, pads: str = "include") -> None:
        if pads not in PAD_POLICIES:
            raise EngineError(f"unknown pad policy {pads!r}: use one of {', '.join(PAD_POLICIES)}")
        self.sites = None if sites is None else set(sites)
        self.pads = pads
        self.run = RunContext(CfgLayout(guided=False))  # replaced by the run's (pre_hooks)
        self.values: dict[tuple[int, str], float] = {}
        self.shapes: dict[str, SiteShape] = {}
        self._contexts: dict[str, str] = {}
        self._pad_keys: dict[str, torch.Tensor] = {}

    def begin(self, backend, request: GenerationRequest) -> None:
        self.values.clear()
        self.shapes.clear()
        known = {s.name: s for s in backend.sites()}
        if self.sites is not None:
            unknown = sorted(self.sites - set(known))
            if unknown:
                raise EngineError(f"unknown site {unknown[0]!r}: pick names from `python main.py sites`")
        self._contexts = {n: s.context for n, s in known.items()}
        self._pad_keys = backend.pad_keys(request) if self.pads == "renormalise" else {}

    def pre_hooks(self, backend, run: RunContext) -> list:
        self.run = run  # the run's step clock and CFG layout
        return []

    def wrap(self, site: str, module, inner):
        if self.sites is not None and site not in self.sites:
            return None
        return site_processor_for(site, inner, self._handle)

    def end(self) -> None:
        self._pad_keys = {}

    def describe(self) -> dict[str, Any]:
        return {"type": "entropy_probe", "pads": self.pads,
                "sites": None if self.sites is None else sorted(self.sites)}

    def _handle(self, call: SiteCall) -> torch.Tensor:
        out = call.run_inner()
        site = call.site
        with torch.no_grad():
            if site not in self.shapes:
                self.shapes[site] = shape_of_call(call.attn, call.hidden_states, call.encoder_hidden_states)
            probs = item_probs(call.core(self.run.cfg.cond_item(call.batch)))
            pads = self._pad_keys.get(self._contexts.get(site, ""))
            if pads is not None and pads.shape[0] != probs.shape[-1]:
                pads = None  # self-attention of a padded context: no pads among its keys
            self.values[(self.run.clock.step, site)] = mean_entropy_torch(probs, pads)
        return out


@dataclass
class ConvergenceReport:
    """Entropy ``(steps, sites)`` of a run, its late change and the stable / fast split."""

    sites: list[str]
    kinds: list[str]
    entropy: np.ndarray
    late_change: np.ndarray
    threshold: dict[str, float]
    stable: np.ndarray
    late_fraction: float = 0.5
    quantile: float = 0.5
    group: str = "kind"
    pads: str = "include"
    source: str = "streamed"
    model_id: str = ""
    steps: int = 0
    shapes: dict[str, SiteShape] = field(default_factory=dict)

    @property
    def change(self) -> np.ndarray:
        """``|H_t − H_{t−1}|``, shape ``(steps − 1, sites)``."""
        return mean_abs_change(self.entropy)

    @property
    def stable_sites(self) -> list[str]:
        return [s for s, ok in zip(self.sites, self.stable, strict=True) if ok]

    @property
    def fast_sites(self) -> list[str]:
        return [s for s, ok in zip(self.sites, self.stable, strict=True) if not ok]

    def moderate_sites(self, quantile: float = 0.75) -> list[str]:
        """Fast sites whose late change is at most the ``quantile`` of their group (the
        "moderate convergence" layers that the Balanced / Aggressive presets freeze late)."""
        out = []
        for kind in sorted(set(self.kinds)):
            idx = self._group_index(kind)
            cut = float(np.quantile(self.late_change[idx], quantile))
            out += [self.sites[i] for i in idx if not self.stable[i] and self.late_change[i] <= cut]
        return [s for s in self.sites if s in set(out)]

    def _group_index(self, kind: str) -> np.ndarray:
        if self.group == "all":
            return np.arange(len(self.sites))
        return np.array([i for i, k in enumerate(self.kinds) if k == kind])

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["entropy"] = self.entropy.tolist()
        d["late_change"] = self.late_change.tolist()
        d["stable"] = [bool(v) for v in self.stable]
        d["shapes"] = {k: dataclasses.asdict(v) for k, v in self.shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvergenceReport:
        d = dict(d)
        d["entropy"] = np.asarray(d["entropy"], dtype=np.float64)
        d["late_change"] = np.asarray(d["late_change"], dtype=np.float64)
        d["stable"] = np.asarray(d["stable"], dtype=bool)
        d["shapes"] = {k: SiteShape(**v) for k, v in d.get("shapes", {}).items()}
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConvergenceReport:
        """Read a report written by :meth:`save`; every entry's type and shape is checked
        (:mod:`engine.loaders`), a damaged file raises one :class:`EngineError` line."""
        from engine.loaders import Checker, read_json

        check = Checker(f"convergence profile {path}", "write one with `python main.py convergence --out ...`")
        d = check.table(read_json(path, check), "report")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise check.fail(f"has unknown entries {unknown[:5]}")
        sites = check.texts(check.key(d, "sites"), "site list", 100_000)
        kinds = check.texts(check.key(d, "kinds"), "kind list", 100_000)
        if not sites or len(kinds) != len(sites):
            raise check.fail(f"lists {len(sites)} sites and {len(kinds)} kinds")

        def numbers(value: Any, name: str) -> list[float]:
            row = check.items(value, name, len(sites))
            if len(row) != len(sites) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in row):
                raise check.fail(f"has a {name} that is not {len(sites)} numbers")
            return row

        rows = check.items(check.key(d, "entropy"), "entropy", 100_000)
        entropy = np.array([numbers(r, "entropy row") for r in rows], dtype=np.float64).reshape(-1, len(sites))
        stable = check.items(check.key(d, "stable"), "stable list", len(sites))
        if len(stable) != len(sites) or not all(isinstance(v, bool) for v in stable):
            raise check.fail(f"has a stable list that is not {len(sites)} true/false values")
        shapes = {}
        for site, shape in check.table(d.get("shapes", {}), "shapes").items():
            shape = check.table(shape, f"shape of {site!r:.60}")
            names = [f.name for f in dataclasses.fields(SiteShape)]
            if sorted(shape) != sorted(names):
                raise check.fail(f"has a shape of {site!r:.60} without the entries {names}")
            shapes[site] = SiteShape(**{n: check.whole(shape[n], f"shape {n}") for n in names})
        threshold = check.table(check.key(d, "threshold"), "threshold")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in threshold.values()):
            raise check.fail("has a threshold table with non-numeric values")
        late_fraction = check.number(d.get("late_fraction", 0.5), "late_fraction")
        quantile = check.number(d.get("quantile", 0.5), "quantile")
        if not 0 < late_fraction <= 1 or not 0 <= quantile <= 1:
            raise check.fail(f"has late_fraction {late_fraction} / quantile {quantile} outside (0, 1]")
        return cls(sites=sites, kinds=kinds, entropy=entropy,
                   late_change=np.array(numbers(check.key(d, "late_change"), "late_change"), dtype=np.float64),
                   threshold={k: float(v) for k, v in threshold.items()}, stable=np.array(stable, dtype=bool), late_fraction=late_fraction,
                   quantile=quantile, group=check.text(d.get("group", "kind"), "group", 16),
                   pads=check.text(d.get("pads", "include"), "pads", 32),
                   source=check.text(d.get("source", "streamed"), "source", 64),
                   model_id=check.text(d.get("model_id", ""), "model_id", 4096),
                   steps=check.whole(d.get("steps", 0), "steps", 0, 1_000_000), shapes=shapes)

    def write_csv(self, path: str | Path) -> Path:
        """One row per site: kind, class, late change, then the entropy of every step."""
        path = Path(path)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["site", "kind", "class", "late_change",
                        *[f"entropy_step{t}" for t in range(self.entropy.shape[0])]])
            for i, site in enumerate(self.sites):
                w.writerow([site, self.kinds[i], "stable" if self.stable[i] else "fast",
                            f"{self.late_change[i]:.6g}", *[f"{v:.6g}" for v in self.entropy[:, i]]])
        return path


def late_change_of(entropy: np.ndarray, late_fraction: float = 0.5) -> np.ndarray:
    """Mean ``|ΔH|`` over the last ``ceil((steps − 1) · late_fraction)`` transitions, per site."""
    if not 0 < late_fraction <= 1:
        raise EngineError(f"late_fraction must be in (0, 1], got {late_fraction}")
    change = mean_abs_change(entropy)
    n_late = max(1, int(np.ceil(change.shape[0] * late_fraction)))
    return change[-n_late:].mean(axis=0)


def classify(late_change: np.ndarray, kinds: list[str], quantile: float = 0.5,
             group: str = "kind", threshold: float | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Stable mask (``late_change < threshold``) and the threshold per group.

    The threshold is the ``quantile`` of the group's late changes (median by default) unless a
    fixed ``threshold`` is given.
    """
    if group not in GROUPS:
        raise EngineError(f"unknown grouping {group!r}: use one of {', '.join(GROUPS)}")
    if not 0 <= quantile <= 1:
        raise EngineError(f"quantile must be in [0, 1], got {quantile}")
    lc = np.asarray(late_change, dtype=np.float64)
    stable = np.zeros(lc.shape, dtype=bool)
    cuts: dict[str, float] = {}
    groups = {"all": list(range(lc.size))} if group == "all" else {
        k: [i for i, kk in enumerate(kinds) if kk == k] for k in sorted(set(kinds))}
    for name, idx in groups.items():
        cut = float(threshold) if threshold is not None else float(np.quantile(lc[idx], quantile))
        cuts[name] = cut
        stable[idx] = lc[idx] < cut
    return stable, cuts


def build_report(entropy: np.ndarray, sites: list[str], kinds: list[str], *, late_fraction: float = 0.5,
                 quantile: float = 0.5, group: str = "kind", threshold: float | None = None,
                 **meta: Any) -> ConvergenceReport:
    """A :class:`ConvergenceReport` from a ``(steps, sites)`` entropy array."""
    entropy = np.asarray(entropy, dtype=np.float64)
    if entropy.ndim != 2 or entropy.shape[1] != len(sites) or len(kinds) != len(sites):
        raise EngineError(f"entropy {entropy.shape} does not match {len(sites)} sites")
    lc = late_change_of(entropy, late_fraction)
    stable, cuts = classify(lc, kinds, quantile, group, threshold)
    return ConvergenceReport(sites=list(sites), kinds=list(kinds), entropy=entropy, late_change=lc,
                             threshold=cuts, stable=stable, late_fraction=late_fraction,
                             quantile=quantile, group=group, **meta)


def diagnose(backend, request: GenerationRequest, sites: list[str] | None = None, *,
             late_fraction: float = 0.5, quantile: float = 0.5, group: str = "kind",
             pads: str = "include", threshold: float | None = None):
    """Run ``request`` with a streaming :class:`EntropyProbe` on ``sites`` (default: all, cross
    and self); return ``(ConvergenceReport, RunResult)``. Capture follows ``request``."""
    if request.steps < 2:
        raise EngineError("convergence needs at least 2 denoising steps: raise --steps")
    probe = EntropyProbe(sites, pads)
    result = backend.generate(dataclasses.replace(request, interventions=(*request.interventions, probe)))
    all_sites = backend.sites()
    names = [s.name for s in all_sites if sites is None or s.name in set(sites)]
    kinds = [s.kind for s in all_sites if s.name in set(names)]
    n_steps = max(t for t, _ in probe.values) + 1
    ent = np.full((n_steps, len(names)), np.nan)
    for (t, s), v in probe.values.items():
        ent[t, names.index(s)] = v
    if np.isnan(ent).any():
        missing = names[int(np.argwhere(np.isnan(ent))[0][1])]
        raise EngineError(f"site {missing} was not called at every step; leave it out of --sites")
    report = build_report(ent, names, kinds, late_fraction=late_fraction, quantile=quantile,
                          group=group, threshold=threshold, pads=pads, source="streamed",
                          model_id=str(backend.model_id), steps=int(request.steps),
                          shapes=dict(probe.shapes))
    return report, result


def report_from_frames(result, *, late_fraction: float = 0.5, quantile: float = 0.5,
                       group: str = "kind", pads: str = "include") -> ConvergenceReport:
    """A report from a run's recorded frames (every captured site needs every step)."""
    if pads not in PAD_POLICIES:
        raise EngineError(f"unknown pad policy {pads!r}: use one of {', '.join(PAD_POLICIES)}")
    kinds_by = {s.name: s for s in result.sites}
    names = [s.name for s in result.sites if any(k[1] == s.name for k in result.frames)]
    steps = sorted({t for t, _ in result.frames})
    if not names or len(steps) < 2:
        raise EngineError("the run recorded fewer than 2 steps: capture every step (capture_steps=None)")
    pad_keys = result.aux.get("pad_keys", {}) if pads == "renormalise" else {}
    ent = np.zeros((len(steps), len(names)))
    head_mean = False
    for j, name in enumerate(names):
        mask = pad_keys.get(kinds_by[name].context)
        for i, t in enumerate(steps):
            if (t, name) not in result.frames:
                raise EngineError(f"site {name} has no frame at step {t}: capture every step")
            probs = np.asarray(result.frames[(t, name)], dtype=np.float64)
            head_mean |= probs.shape[0] == 1 and kinds_by[name].heads > 1
            use = mask if mask is not None and mask.shape[0] == probs.shape[-1] else None
            ent[i, j] = mean_entropy(probs, use)
    return build_report(ent, names, [kinds_by[n].kind for n in names], late_fraction=late_fraction,
                        quantile=quantile, group=group, pads=pads,
                        source="frames (head-mean: entropy of the mean attention)" if head_mean else "frames",
                        model_id=str(result.recipe.get("model_id", "")),
                        steps=int(result.recipe.get("steps", len(steps))))


def plot_entropy(report: ConvergenceReport, path: str | Path) -> None:
    """Entropy curves per site (stable solid blue, fast dashed orange), one panel per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted(set(report.kinds))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.6), squeeze=False)
    steps = np.arange(report.entropy.shape[0])
    for ax, kind in zip(axes[0], kinds, strict=True):
        for i in range(len(report.sites)):
            if report.kinds[i] != kind:
                continue
            stable = bool(report.stable[i])
            ax.plot(steps, report.entropy[:, i], "-" if stable else "--", lw=1.2,
                    color="tab:blue" if stable else "tab:orange", alpha=0.85)
        ax.set_title(f"{kind}-attention entropy (blue: stable, orange: fast)")
        ax.set_xlabel("denoising step")
        ax.set_ylabel("entropy (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
