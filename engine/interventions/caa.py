"""Contrastive Activation Addition (TADA Eq. 2–3) and the steering intervention it feeds.

* :class:`OutputCollector` records, per cross-attention layer and step, the conditional half's
  attention output averaged over queries (the time × mel lattice positions).
* :func:`compute_caa` runs the positive and negative prompt sets (one :class:`MeanRun` work item
  per prompt × seed) and forms, per layer, ``v = mean_i h̄_c(i) − mean_j h̄_c̃(j)`` normalised
  to unit length (over steps, or one vector per step with ``per_step=True``).
* :class:`Steer` adds ``α·v`` to the attention output of chosen layers, optionally followed by
  **ReNorm** (each token's steered output rescaled to that token's original norm; off by
  default, as in TADA's public code, because it hurt AudioLDM2). ``α = 0`` returns the output
  untouched (bit-identical run). The edit is applied to **both CFG halves** by default: the
  guided prediction ``ε_u + g(ε_c − ε_u)`` then carries about the same shift as either half, so
  α has the same meaning at every guidance scale; ``halves="cond"`` steers the conditional half
  only (its effect grows with the guidance scale g).

:class:`SteeringVectors` files are ``.npz`` or ``.safetensors`` with metadata (model id,
layers, prompts, method).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.interventions.layers import RunState, resolve_layers
from engine.interventions.processors import intervention_processor_for
from engine.probe.cfg_layout import check_halves
from engine.recipe import LIMITS
from engine.types import EngineError, GenerationRequest
from engine.work_items import Runner, counter, in_process

ALPHA_MAX = LIMITS.steer_alpha_max  # |α| allowed (engine.recipe.LIMITS)
FORMAT_VERSION = 1
VECTOR_SUFFIXES = (".npz", ".safetensors")  # the file formats of SteeringVectors.save / load


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or an :class:`EngineError` when it is not finite or beyond ±ALPHA_MAX."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise EngineError(f"steering strength must be a number, got {alpha!r}") from None
    if not np.isfinite(a) or abs(a) > ALPHA_MAX:
        raise EngineError(f"steering strength α={alpha} is out of range: use -{ALPHA_MAX:g} ≤ α ≤ {ALPHA_MAX:g}")
    return a


def check_prompts(prompts: Sequence[str], what: str) -> list[str]:
    items = [p for p in (prompts or []) if isinstance(p, str)]
    if not items or len(items) != len(prompts):
        raise EngineError(f"the {what} prompt set is empty or holds non-text items: give at least one prompt")
    if any(not p.strip() for p in items):
        raise EngineError(f"the {what} prompt set holds an empty prompt: remove it")
    return items


class OutputCollector(RunState):
    """Records the per-step, query-averaged conditional attention output of ``sites``
    (``means[site][step] -> (C,)``) and, with ``keep_tokens``, every query's output."""

    def __init__(self, sites: Sequence[str], keep_tokens: bool = False) -> None:
        super().__init__()
        self.sites = list(sites)
        self.keep_tokens = keep_tokens
        self.means: dict[str, dict[int, np.ndarray]] = {}
        self.tokens: dict[str, dict[int, np.ndarray]] = {}

    def begin(self, backend, request) -> None:
        super().begin(backend, request)
        self.means, self.tokens = {}, {}

    def wrap(self, site: str, module, inner):
        if site not in self.sites:
            return None

        def collect(out: torch.Tensor) -> torch.Tensor:
            if out.ndim != 3:
                raise EngineError(f"site {site} returns a {out.ndim}-D output; steering needs (B, Q, C)")
            cond = out[self.cond_slice(out.shape[0])].detach().float()
            self.means.setdefault(site, {})[self.step] = cond.mean(dim=(0, 1)).cpu().numpy()
            if self.keep_tokens:
                self.tokens.setdefault(site, {})[self.step] = cond.mean(dim=0).cpu().numpy()
            return out

        return intervention_processor_for(site, inner, output_hook=collect)

    def describe(self) -> dict[str, Any]:
        return {"type": "collect_outputs", "sites": self.sites}


@dataclass
class SteeringVectors:
    """Per site a vector ``(C,)`` or per-step vectors ``(S, C)``, with their provenance."""

    vectors: dict[str, np.ndarray]
    model_id: str
    method: str = "caa"  # "caa" or "sae"
    concept: str = ""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    per_step: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        return list(self.vectors)

    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "model_id": self.model_id, "method": self.method,
                "concept": self.concept, "positive": self.positive, "negative": self.negative,
                "per_step": self.per_step, "sites": self.sites, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` or ``.safetensors`` (by suffix), atomically; a failed write keeps nothing."""
        from engine.atomic_io import atomic_write
        from engine.output_dir import guarded

        path = Path(path)
        if path.suffix not in VECTOR_SUFFIXES:
            raise EngineError(f"steering vectors are saved as .npz or .safetensors, not {path.suffix or 'no suffix'}")
        arrays = {f"v{i}": np.ascontiguousarray(v, dtype=np.float32) for i, v in enumerate(self.vectors.values())}
        meta = json.dumps(self.metadata())

        def write(tmp: str) -> None:
            if path.suffix == ".npz":
                np.savez(tmp, __meta__=np.array(meta), **arrays)
            else:
                from safetensors.numpy import save_file

                save_file(arrays, tmp, metadata={"aiba_steering": meta})

        with guarded(path, flag="path"):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        """Read a file written by :meth:`save`; metadata, shapes and sizes are checked
        (:mod:`engine.loaders`) and a damaged file raises one :class:`EngineError` line."""
        from engine.loaders import Checker, decode_json, read_npz, read_safetensors

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"no steering-vector file {path}: compute one with `python main.py caa` or `sae`")
        check = Checker(f"steering-vector file {path}", "compute it again with `python main.py caa` or `sae`")
        if path.suffix == ".npz":
            arrays = read_npz(path, check)
            raw_meta = arrays.pop("__meta__", None)
            if raw_meta is None or raw_meta.shape != () or raw_meta.dtype.kind != "U":
                raise check.fail("has no text __meta__ entry")
            meta = decode_json(str(raw_meta), check)
        elif path.suffix == ".safetensors":
            arrays, info = read_safetensors(path, check)
            if "aiba_steering" not in info:
                raise check.fail("has no aiba_steering metadata")
            meta = decode_json(info["aiba_steering"], check)
        else:
            raise EngineError(f"{path} is neither .npz nor .safetensors: pick a steering-vector file")
        meta = check.table(meta, "metadata")
        sites = check.texts(check.key(meta, "sites"), "site list", 100_000)
        if not sites or len(set(sites)) != len(sites) or len(arrays) != len(sites):
            raise check.fail(f"lists {len(sites)} sites (unique: {len(set(sites))}) for {len(arrays)} vectors")
        per_step = check.flag(meta.get("per_step", False), "per_step")
        vectors = {}
        for i, site in enumerate(sites):
            if f"v{i}" not in arrays:
                raise check.fail(f"has no vector v{i} for site {site!r:.60}")
            v = check.array(np.asarray(arrays[f"v{i}"]), f"vector of {site!r:.60}", (2,) if per_step else (1,), "f")
            if v.size == 0 or not np.all(np.isfinite(v)):
                raise check.fail(f"has an empty or non-finite vector for site {site!r:.60}")
            vectors[site] = np.array(v, dtype=np.float32)
        if len({v.shape for v in vectors.values()}) != 1 and per_step:
            raise check.fail("has per-step vectors with different numbers of steps")
        return cls(vectors, check.text(check.key(meta, "model_id"), "model_id", 4096),
                   check.text(meta.get("method", "caa"), "method", 64),
                   check.text(meta.get("concept", ""), "concept", 4096),
                   check.texts(meta.get("positive", []), "positive prompt list"),
                   check.texts(meta.get("negative", []), "negative prompt list"),
                   per_step, dict(check.table(meta.get("meta", {}), "meta")))


def random_directions(backend, concept: str, seed: int = 0) -> SteeringVectors:
    """A fixed random unit vector per cross-attention site (seeded): steering whose cost and
    plumbing are real without a computed concept (benchmarks, tests)."""
    from engine.interventions.layers import cross_sites

    rng = np.random.default_rng(seed)
    vectors = {}
    for site in cross_sites(backend):
        width = backend.denoiser.get_submodule(site).to_out[0].out_features
        v = rng.standard_normal(width).astype(np.float32)
        vectors[site] = v / np.linalg.norm(v)
    return SteeringVectors(vectors, backend.model_id, concept=concept)


def _normalise(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise EngineError("the positive and negative prompt sets give identical activations: "
                          "use prompt sets that differ in the concept")
    return v / n


@dataclass(frozen=True)
class MeanRun:
    """Work item: one prompt × seed run whose query-averaged cond outputs at ``sites`` are kept."""

    prompt: str
    seed: int
    sites: tuple[str, ...]
    steps: int
    guidance: float
    duration: float


def mean_runs(prompts: Sequence[str], seeds: Sequence[int], sites: Sequence[str], steps: int, guidance: float,
              duration: float) -> list[MeanRun]:
    """The items of :func:`compute_caa`, prompt-major then seed."""
    return [MeanRun(p, int(seed), tuple(sites), steps, guidance, duration) for p in prompts for seed in seeds]


def run_means(backend, item: MeanRun) -> dict[str, np.ndarray]:
    """Per site ``(S, C)``: the item's query-averaged cond output at each step (pure: no files)."""
    col = OutputCollector(item.sites)
    backend.generate(GenerationRequest(prompt=item.prompt, seed=item.seed, steps=item.steps, guidance=item.guidance,
                                       duration=item.duration, capture=False, interventions=(col,)))
    return {s: np.stack([col.means.get(s, {})[k] for k in sorted(col.means.get(s, {}))]) for s in item.sites}


def compute_caa(backend, positive: Sequence[str], negative: Sequence[str], layers=None, steps: int = 10,
                guidance: float = 3.0, duration: float = 4.0, seeds: Sequence[int] = (0,),
                per_step: bool = False, concept: str = "",
                progress: Callable[[int, int], None] | None = None,
                runner: Runner | None = None) -> SteeringVectors:
    """CAA steering vectors (Eq. 2) of ``positive`` vs ``negative`` prompts at ``layers``; the
    runs (:class:`MeanRun` items, positive then negative) go through ``runner`` when given
    (:mod:`engine.work_items`: ``caa --ray``), else run here."""
    pos = check_prompts(positive, "positive")
    neg = check_prompts(negative, "negative")
    sites = resolve_layers(backend, layers)
    if not seeds:
        raise EngineError("give at least one seed")
    items = mean_runs(pos + neg, seeds, sites, steps, guidance, duration)
    results = (runner or in_process(lambda item: run_means(backend, item)))(items, counter(len(items), progress))
    n_pos = len(pos) * len(seeds)
    vectors = {}
    for s in sites:
        pm = np.stack([r[s] for r in results[:n_pos]])
        nm = np.stack([r[s] for r in results[n_pos:]])
        diff = pm.mean(axis=0) - nm.mean(axis=0)  # (S, C)
        vectors[s] = _normalise(diff if per_step else diff.mean(axis=0)).astype(np.float32)
    return SteeringVectors(vectors, backend.model_id, "caa", concept, pos, neg, per_step,
                           {"steps": steps, "guidance": guidance, "duration": duration,
                            "seeds": [int(x) for x in seeds]})


def renorm(steered: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """TADA Eq. 3 per token: ``h' / ‖h'‖ · ‖h‖`` over the channel axis (zero tokens stay zero)."""
    n_new = steered.norm(dim=-1, keepdim=True)
    n_old = original.norm(dim=-1, keepdim=True)
    return torch.where(n_new > 0, steered * (n_old / n_new.clamp_min(1e-30)), steered)


class Steer(RunState):
    """Intervention adding ``alpha · v`` to the attention output of the vectors' sites."""

    def __init__(self, vectors: SteeringVectors, alpha: float, sites: Sequence[str] | None = None,
                 use_renorm: bool = False, halves: str = "both") -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.vectors = vectors
        chosen = list(vectors.sites if sites is None else sites)
        unknown = [s for s in chosen if s not in vectors.vectors]
        if unknown:
            raise EngineError(f"the steering vectors have no layer {unknown[0]}; they cover {len(vectors.sites)} "
                              "layers: compute vectors for it or choose among those")
        if not chosen:
            raise EngineError("no layers to steer: choose at least one layer")
        self.sites = chosen
        self.use_renorm = bool(use_renorm)
        self.halves = check_halves(halves)
        self._cache: dict[str, torch.Tensor] = {}

    def begin(self, backend, request) -> None:
        super().begin(backend, request)
        if self.vectors.per_step:
            n = {v.shape[0] for v in self.vectors.vectors.values()}
            if n != {self.steps}:
                raise EngineError(f"the per-step vectors were computed for {sorted(n)} steps; run with that "
                                  "many steps or use vectors averaged over steps")
        self._cache = {}

    def _vector(self, site: str, like: torch.Tensor) -> torch.Tensor:
        key = f"{site}@{like.device}:{like.dtype}"
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(self.vectors.vectors[site], device=like.device, dtype=like.dtype)
        v = self._cache[key]
        return v[min(self.step, v.shape[0] - 1)] if self.vectors.per_step else v

    def wrap(self, site: str, module, inner):
        if site not in self.sites:
            return None
        width = module.to_out[0].out_features
        dim = self.vectors.vectors[site].shape[-1]
        if dim != width:
            raise EngineError(f"steering vector for {site} has {dim} channels, the layer outputs {width}: "
                              "the vectors belong to another model")
        if self.alpha == 0.0:
            return None  # α = 0: the run is the unsteered run, bit for bit

        def steer(out: torch.Tensor) -> torch.Tensor:
            if out.ndim != 3:
                raise EngineError(f"site {site} returns a {out.ndim}-D output; steering needs (B, Q, C)")
            items = self.cfg.items(out.shape[0], self.halves)
            new = out.clone()
            part = out[items]
            steered = part + self.alpha * self._vector(site, out)
            new[items] = renorm(steered, part) if self.use_renorm else steered
            return new

        return intervention_processor_for(site, inner, output_hook=steer)

    def describe(self) -> dict[str, Any]:
        return {"type": "steer", "method": self.vectors.method, "concept": self.vectors.concept,
                "alpha": self.alpha, "renorm": self.use_renorm, "halves": self.halves, "sites": self.sites}
