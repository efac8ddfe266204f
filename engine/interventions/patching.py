"""Activation patching of cross-attention keys and values (TADA §3, Eq. 9).

A *target* run with prompt ``P_c`` caches, at every cross-attention layer, the projected keys and
values and the prepared attention mask (:class:`KVRecorder`). A *source* run with ``P_c̃`` then
substitutes one layer's K and V (or K only, V only) with the cached ones (:class:`KVPatch`).

**The full CFG batch is cached and substituted**, unconditional half included. Patching the
conditional half alone cannot reproduce the target run on AudioLDM2, whose unconditional GPT-2
embeddings depend on the positive prompt's T5 length; and on Stable Audio the unconditional
context is all zeros unless a negative prompt is given (see the diffusers notes §3.5). With the
full batch, patching every layer of the source run with the target's K/V reproduces the target
run. The mask travels with the keys, so prompts of different token counts can be patched (K-only
and V-only patching need equal key counts).

The text context is the same at every denoising step, so entries are cached per step but stored
only when they differ from the previous step's (a lookup takes the latest stored step ≤ now).
Attention probabilities recorded by capture during a *patched* run are those of the source
prompt's keys (capture recomputes them from the site's inputs); run patched runs without capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.interventions.layers import RunState
from engine.interventions.processors import intervention_processor_for
from engine.types import EngineError
from engine.work_items import Runner, counter, in_process

PATCH_MODES = ("kv", "k", "v")


@dataclass
class KVEntry:
    step: int
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None

    def on(self, device: torch.device) -> KVEntry:
        """This entry on ``device`` (itself when it is there already)."""
        if self.key.device == device:
            return self
        return KVEntry(self.step, self.key.to(device), self.value.to(device),
                       None if self.mask is None else self.mask.to(device))


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


@dataclass
class KVCache:
    """Per site, the K/V/mask entries of one run (deduplicated over steps)."""

    entries: dict[str, list[KVEntry]] = field(default_factory=dict)
    prompt: str = ""
    seed: int = 0

    def add(self, site: str, step: int, key, value, mask) -> None:
        items = self.entries.setdefault(site, [])
        if items and _same(items[-1].key, key) and _same(items[-1].value, value) and _same(items[-1].mask, mask):
            return
        items.append(KVEntry(step, key.detach().clone(), value.detach().clone(),
                             None if mask is None else mask.detach().clone()))

    def get(self, site: str, step: int) -> KVEntry:
        items = self.entries.get(site)
        if not items:
            raise EngineError(f"no cached keys/values for site {site}: record the target run on that layer")
        found = [e for e in items if e.step <= step]
        return found[-1] if found else items[0]

    @property
    def sites(self) -> list[str]:
        return list(self.entries)

    def stored_entries(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def only(self, site: str) -> KVCache:
        """The entries of ``site`` alone (shared, not copied): what one patched run needs."""
        entries = {site: self.entries[site]} if site in self.entries else {}
        return KVCache(entries, self.prompt, self.seed)

    def cpu(self) -> KVCache:
        """The cache with every tensor on the CPU (to travel between processes)."""
        def move(t):
            return None if t is None else t.cpu()

        return KVCache({s: [KVEntry(e.step, move(e.key), move(e.value), move(e.mask)) for e in items]
                        for s, items in self.entries.items()}, self.prompt, self.seed)


class KVRecorder(RunState):
    """Intervention that caches K/V/mask of ``sites`` into :attr:`cache`; output unchanged."""

    def __init__(self, sites: Sequence[str]) -> None:
        super().__init__()
        self.sites = list(sites)
        self.cache = KVCache()

    def begin(self, backend, request) -> None:
        super().begin(backend, request)
        self.cache = KVCache(prompt=request.prompt, seed=int(request.seed))

    def wrap(self, site: str, module, inner):
        if site not in self.sites:
            return None

        def record(key, value, mask):
            self.cache.add(site, self.step, key, value, mask)
            return key, value, mask

        return intervention_processor_for(site, inner, kv_hook=record)

    def describe(self) -> dict[str, Any]:
        return {"type": "kv_record", "sites": self.sites}


class KVPatch(RunState):
    """Intervention that substitutes K and/or V (``mode`` kv, k, v) at ``sites`` from ``cache``.

    The target's mask goes with its keys (modes kv and k); mode v keeps the source's mask.
    """

    def __init__(self, cache: KVCache, sites: Sequence[str], mode: str = "kv") -> None:
        super().__init__()
        if mode not in PATCH_MODES:
            raise EngineError(f"unknown patch mode {mode!r}: use kv, k or v")
        missing = [s for s in sites if s not in cache.entries]
        if missing:
            raise EngineError(f"the cache holds no keys/values for {missing[0]}: record the target run on it")
        if not sites:
            raise EngineError("no layers to patch: give at least one cross-attention layer")
        self.cache = cache
        self.sites = list(sites)
        self.mode = mode

    def wrap(self, site: str, module, inner):
        if site not in self.sites:
            return None

        def substitute(key, value, mask):
            entry = self.cache.get(site, self.step).on(key.device)
            if self.mode == "kv":
                return entry.key, entry.value, entry.mask
            if entry.key.shape != key.shape:
                raise EngineError(
                    f"{self.mode.upper()}-only patching at {site} needs equal key counts (target "
                    f"{entry.key.shape[1]}, source {key.shape[1]}): use mode kv or prompts of equal length"
                )
            if self.mode == "k":
                return entry.key, value, entry.mask
            return key, entry.value, mask

        return intervention_processor_for(site, inner, kv_hook=substitute)

    def describe(self) -> dict[str, Any]:
        return {"type": "kv_patch", "mode": self.mode, "sites": self.sites,
                "target_prompt": self.cache.prompt, "target_seed": self.cache.seed}


def impact_score(sim_patched: np.ndarray | float, sim_source: float, sim_target: float) -> np.ndarray:
    """TADA Eq. 9: ``(sim(l←c, l'←c̃) − sim(c̃)) / (sim(c) − sim(c̃))``; nan where the target and
    source runs score the same (the concept is not measurable on this pair)."""
    denom = float(sim_target) - float(sim_source)
    patched = np.asarray(sim_patched, dtype=np.float64)
    if not np.isfinite(denom) or abs(denom) < 1e-12:
        return np.full(patched.shape, np.nan)
    return (patched - float(sim_source)) / denom


@dataclass
class PatchReport:
    """Similarities and Eq. 9 impact of a layer sweep over pairs × seeds (scorer named)."""

    concept: str
    query: str
    scorer: str
    mode: str
    sites: list[str]
    layer_numbers: list[int]
    pairs: list[tuple[str, str]]
    seeds: list[int]
    sim_target: np.ndarray  # (P, S)
    sim_source: np.ndarray  # (P, S)
    sim_patched: np.ndarray  # (L, P, S)

    @property
    def impact(self) -> np.ndarray:
        """Per layer: Eq. 9 on the similarities averaged over pairs and seeds."""
        return impact_score(self.sim_patched.mean(axis=(1, 2)), float(self.sim_source.mean()),
                            float(self.sim_target.mean()))

    @property
    def measurable(self) -> bool:
        """Whether the scorer rates the prompts with the concept above those without it; when it
        does not, Eq. 9's denominator is ≤ 0 and the impacts (and functional layers) mean nothing."""
        return bool(float(np.mean(self.sim_target)) > float(np.mean(self.sim_source)))

    def functional_layers(self, top: int = 2) -> list[str]:
        """The ``top`` sites with the highest impact (nan counts as lowest)."""
        order = np.argsort(-np.nan_to_num(self.impact, nan=-np.inf), kind="stable")
        return [self.sites[i] for i in order[:top]]

    def to_dict(self) -> dict[str, Any]:
        imp = self.impact
        return {
            "concept": self.concept, "query": self.query, "scorer": self.scorer, "mode": self.mode,
            "pairs": [list(p) for p in self.pairs], "seeds": self.seeds,
            "measurable": self.measurable,
            "sim_target_mean": float(self.sim_target.mean()), "sim_source_mean": float(self.sim_source.mean()),
            "layers": [{"layer": n, "site": s, "impact": None if not np.isfinite(v) else float(v),
                        "sim_patched_mean": float(self.sim_patched[i].mean())}
                       for i, (n, s, v) in enumerate(zip(self.layer_numbers, self.sites, imp, strict=True))],
        }


@dataclass(frozen=True)
class SweepSettings:
    """What every run of a patching sweep shares: the scorer's query, patch mode and run settings."""

    query: str
    mode: str = "kv"
    steps: int = 10
    guidance: float = 3.0
    duration: float = 4.0

    def request(self, prompt: str, seed: int, interventions=()):
        from engine.types import GenerationRequest

        return GenerationRequest(prompt=prompt, seed=int(seed), steps=self.steps, guidance=self.guidance,
                                 duration=self.duration, capture=False, interventions=tuple(interventions))


@dataclass(frozen=True)
class PairRun:
    """Work item: the target run (recording K/V of ``sites``) and the source run of pair ``pair`` × seed."""

    pair: int
    seed_index: int
    target: str
    source: str
    seed: int
    sites: tuple[str, ...]

    runs = 2  # generations it makes (progress)


@dataclass(frozen=True)
class PairResult:
    sim_target: float
    sim_source: float
    cache: KVCache  # the target's K/V on the CPU


@dataclass(frozen=True)
class LayerRun:
    """Work item: the source run with layer ``layer``'s K/V patched from the target's ``cache``."""

    layer: int
    pair: int
    seed_index: int
    source: str
    seed: int
    site: str
    cache: KVCache  # holds ``site`` only

    runs = 1


def pair_runs(pairs: Sequence[tuple[str, str]], seeds: Sequence[int], sites: Sequence[str]) -> list[PairRun]:
    """The sweep's first items, pair-major then seed; an empty prompt is refused here."""
    for i, (target, source) in enumerate(pairs):
        if not (isinstance(target, str) and isinstance(source, str) and target.strip() and source.strip()):
            raise EngineError(f"pair {i} has an empty prompt: every pair needs a target and a source prompt")
    return [PairRun(i, j, t, s, int(seed), tuple(sites)) for i, (t, s) in enumerate(pairs)
            for j, seed in enumerate(seeds)]


def layer_runs(pairs: Sequence[PairRun], results: Sequence[PairResult]) -> list[LayerRun]:
    """The sweep's second items, layer-major, each carrying its pair's cached K/V of that layer."""
    return [LayerRun(k, p.pair, p.seed_index, p.source, p.seed, site, r.cache.only(site))
            for k, site in enumerate(pairs[0].sites) for p, r in zip(pairs, results, strict=True)]


def run_item(backend, scorer, settings: SweepSettings, item: PairRun | LayerRun) -> PairResult | float:
    """One work item of the sweep (pure: no files; the same numbers in any process)."""

    def score(prompt: str, interventions) -> float:
        result = backend.generate(settings.request(prompt, item.seed, interventions))
        return scorer.similarity(result.audio, result.sample_rate, settings.query)

    if isinstance(item, PairRun):
        rec = KVRecorder(item.sites)
        sim_target = score(item.target, [rec])
        return PairResult(sim_target, score(item.source, []), rec.cache.cpu())
    return score(item.source, [KVPatch(item.cache, [item.site], settings.mode)])


def sweep_query(cp, scorer) -> str:
    """What ``scorer`` rates a counterfactual set ``cp`` by: its band template for the band-template
    scorer (when it has one), else its query. A scorer that cannot rate the concept (the instrument
    scorer) refuses here, in one EngineError line, before anything is generated."""
    query = cp.template if (scorer.name == "band-template" and cp.template) else cp.query
    if hasattr(scorer, "check_concept"):
        scorer.check_concept(query)
    return query


def check_sweep(pairs: Sequence, seeds: Sequence[int], mode: str) -> None:
    if not pairs:
        raise EngineError("the prompt-pair set is empty: give at least one (target, source) pair")
    if not seeds:
        raise EngineError("give at least one seed")
    if mode not in PATCH_MODES:
        raise EngineError(f"unknown patch mode {mode!r}: use kv, k or v")


def assemble_report(backend, settings: SweepSettings, scorer_name: str, concept: str,
                    pairs: Sequence[tuple[str, str]], seeds: Sequence[int], sites: Sequence[str],
                    pair_items: Sequence[PairRun], pair_results: Sequence[PairResult],
                    layer_items: Sequence[LayerRun], layer_sims: Sequence[float]) -> PatchReport:
    """The :class:`PatchReport` from every item's result (any completion order: placed by index)."""
    from engine.interventions.layers import layer_numbers

    n_p, n_s = len(pairs), len(seeds)
    sim_t, sim_s, sim_p = np.zeros((n_p, n_s)), np.zeros((n_p, n_s)), np.zeros((len(sites), n_p, n_s))
    for item, r in zip(pair_items, pair_results, strict=True):
        sim_t[item.pair, item.seed_index], sim_s[item.pair, item.seed_index] = r.sim_target, r.sim_source
    for item, sim in zip(layer_items, layer_sims, strict=True):
        sim_p[item.layer, item.pair, item.seed_index] = sim
    return PatchReport(concept or settings.query, settings.query, scorer_name, settings.mode, list(sites),
                       layer_numbers(backend, sites), [tuple(p) for p in pairs], [int(s) for s in seeds],
                       sim_t, sim_s, sim_p)


def patch_sweep(backend, pairs: Sequence[tuple[str, str]], query: str, scorer, layers=None,
                seeds: Sequence[int] = (0,), steps: int = 10, guidance: float = 3.0, duration: float = 4.0,
                mode: str = "kv", concept: str = "", progress=None, runner: Runner | None = None) -> PatchReport:
    """For every pair × seed: the target run (cached), the source run, and one source run per
    layer with that layer's K/V patched from the target; scored against ``query``. The items
    (:class:`PairRun`, then :class:`LayerRun`) run in process, or through ``runner``
    (:mod:`engine.work_items`: ``patch --ray``), whose workers call :func:`run_item`."""
    from engine.interventions.layers import resolve_layers

    check_sweep(pairs, seeds, mode)
    sites = resolve_layers(backend, layers)
    settings = SweepSettings(query, mode, steps, guidance, duration)
    runner = runner or in_process(lambda item: run_item(backend, scorer, settings, item))
    first = pair_runs(pairs, seeds, sites)
    done = counter(len(first) * (len(sites) + 2), progress)
    firsts = runner(first, done)
    second = layer_runs(first, firsts)
    return assemble_report(backend, settings, scorer.name, concept, pairs, seeds, sites, first, firsts, second,
                           runner(second, done))
