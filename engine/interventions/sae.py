"""TopK sparse autoencoders on one layer's cross-attention outputs (TADA Eq. 4–8).

* :func:`collect_activations`: every query's conditional attention output at one site, per
  prompt × seed × step (optionally subsampled per step), with an index for the browser; one
  :class:`CollectRun` work item per prompt × seed (``sae --ray`` runs them on a cluster).
* :class:`TopKSAE`: ``f = ReLU(TopK(W_enc (h − b_pre) + b_enc))``, ``ĥ = W_dec f + b_pre``
  (Eq. 4–5; the ReLU after TopK and the encoder bias follow Gao et al. 2024; decoder columns are
  kept at unit norm). :func:`train_sae` trains it with Adam on CPU.
* :func:`sae_stats`: normalised MSE ``‖h − ĥ‖² / ‖h − mean h‖²``, dead features (never active on
  the data) and high-frequency features (active on more than ``high_freq`` of the tokens).
* :func:`tfidf_scores` (Eq. 6), :func:`sae_steering_vectors` (Eq. 7, steer with
  :class:`engine.interventions.caa.Steer`: ``h + α v``, Eq. 8, no ReNorm).
* :class:`FeatureBrowser`: top-activating prompts/steps of a feature and its time × mel map.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.analysis.mapping import DEFAULT_TARGET, lattice_to_grid
from engine.interventions.caa import OutputCollector, SteeringVectors, check_prompts
from engine.interventions.layers import resolve_layers
from engine.types import EngineError, GenerationRequest
from engine.work_items import Runner, counter, in_process


@dataclass
class ActivationSet:
    """Token activations ``(N, d)`` of one site and, per run, where its rows are."""

    site: str
    data: np.ndarray
    runs: list[dict[str, Any]] = field(default_factory=list)  # prompt, seed, step, rows (start, stop), lattice

    def rows_of(self, prompts: Sequence[str]) -> np.ndarray:
        """Row indices of every run whose prompt is in ``prompts``."""
        want = set(prompts)
        idx = [np.arange(r["rows"][0], r["rows"][1]) for r in self.runs if r["prompt"] in want]
        if not idx:
            raise EngineError("none of these prompts were collected: collect activations for them first")
        return np.concatenate(idx)


@dataclass(frozen=True)
class CollectRun:
    """Work item: one prompt × seed run whose query outputs at ``site`` are kept."""

    prompt: str
    seed: int
    site: str
    steps: int
    guidance: float
    duration: float
    tokens_per_step: int | None = None


@dataclass(frozen=True)
class StepTokens:
    """What one step of a :class:`CollectRun` kept: the query outputs ``(n, d)`` and which queries."""

    step: int
    tokens: np.ndarray
    queries: list[int] | None  # None: every query
    n_queries: int


def run_collect(backend, item: CollectRun) -> tuple[list[StepTokens], list[int] | None]:
    """The kept tokens of every step and the site's query lattice (pure: no files)."""
    col = OutputCollector([item.site], keep_tokens=True)
    # capture one step of this site only: it makes the backend read the site's lattice
    backend.generate(GenerationRequest(prompt=item.prompt, seed=item.seed, steps=item.steps, guidance=item.guidance,
                                       duration=item.duration, capture=True, sites=[item.site], capture_steps=[0],
                                       interventions=(col,)))
    lattice = next((s.lattice for s in backend.sites() if s.name == item.site), None)
    kept = []
    for step in sorted(col.tokens.get(item.site, {})):
        tok = col.tokens[item.site][step]
        keep = np.arange(tok.shape[0])
        if item.tokens_per_step is not None and item.tokens_per_step < tok.shape[0]:
            keep = np.linspace(0, tok.shape[0] - 1, item.tokens_per_step).round().astype(int)
        kept.append(StepTokens(int(step), tok[keep].astype(np.float32),
                               keep.tolist() if keep.size != tok.shape[0] else None, int(tok.shape[0])))
    return kept, list(lattice) if lattice else None


def collect_activations(backend, prompts: Sequence[str], layer, steps: int = 10, guidance: float = 3.0,
                        duration: float = 4.0, seeds: Sequence[int] = (0,), tokens_per_step: int | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        runner: Runner | None = None) -> ActivationSet:
    """Every (or ``tokens_per_step`` evenly spaced) query output of ``layer`` over the runs, one
    :class:`CollectRun` work item per prompt × seed, here or through ``runner``
    (:mod:`engine.work_items`: ``sae --ray``), whose workers call :func:`run_collect`."""
    prompts = check_prompts(prompts, "SAE")
    sites = resolve_layers(backend, [layer] if not isinstance(layer, (list, tuple)) else layer)
    if len(sites) != 1:
        raise EngineError("an SAE is trained on one layer: name exactly one")
    site = sites[0]
    items = [CollectRun(prompt, int(seed), site, steps, guidance, duration, tokens_per_step)
             for prompt in prompts for seed in seeds]
    results = (runner or in_process(lambda item: run_collect(backend, item)))(items, counter(len(items), progress))
    chunks, runs, n = [], [], 0
    for item, (kept, lattice) in zip(items, results, strict=True):
        for k in kept:
            chunks.append(k.tokens)
            runs.append({"prompt": item.prompt, "seed": item.seed, "step": k.step, "rows": (n, n + len(k.tokens)),
                         "queries": k.queries, "lattice": lattice, "n_queries": k.n_queries})
            n += len(k.tokens)
    return ActivationSet(site, np.concatenate(chunks), runs)


class TopKSAE(nn.Module):
    """TopK sparse autoencoder with ``m·d`` features of which ``k`` are active per token."""

    def __init__(self, d: int, expansion: int = 4, k: int = 16, seed: int = 0) -> None:
        super().__init__()
        if d < 1 or expansion < 1:
            raise EngineError(f"bad SAE size d={d}, expansion={expansion}: both must be ≥ 1")
        if not 1 <= k <= d * expansion:
            raise EngineError(f"k={k} must be between 1 and the feature count {d * expansion}")
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(d, d * expansion, generator=gen)
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)  # (d, md): columns are feature directions
        self.W_enc = nn.Parameter(w.t().clone())  # (md, d), tied at init
        self.b_enc = nn.Parameter(torch.zeros(d * expansion))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.k = int(k)
        self.expansion = int(expansion)

    @property
    def n_features(self) -> int:
        return self.W_dec.shape[1]

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        pre = (h - self.b_pre) @ self.W_enc.t() + self.b_enc
        top = torch.topk(pre, self.k, dim=-1)
        f = torch.zeros_like(pre)
        return f.scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec.t() + self.b_pre

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(h)
        return self.decode(f), f

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write the weights and ``meta`` as ``.safetensors``, atomically; a failed write keeps nothing."""
        from safetensors.torch import save_file

        from engine.atomic_io import atomic_write
        from engine.output_dir import guarded

        path = Path(path)
        info = {"k": self.k, "expansion": self.expansion, **(meta or {})}
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with guarded(path, flag="path"):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"aiba_sae": json.dumps(info)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple[TopKSAE, dict[str, Any]]:
        """Read a file written by :meth:`save`; header shapes, sizes and metadata are checked
        (:mod:`engine.loaders`) before the weights are used."""
        from engine.loaders import Checker, decode_json, read_safetensors

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"no SAE file {path}: train one with `python main.py sae`")
        check = Checker(f"SAE file {path}", "train it again with `python main.py sae`")
        state, meta = read_safetensors(path, check, framework="pt")
        if "aiba_sae" not in meta:
            raise EngineError(f"{path} is not an AIBA SAE file: train one with `python main.py sae`")
        info = check.table(decode_json(meta["aiba_sae"], check), "aiba_sae metadata")
        expected = {"W_dec", "W_enc", "b_enc", "b_pre"}
        if set(state) != expected:
            raise check.fail(f"holds tensors {sorted(state)[:6]} instead of {sorted(expected)}")
        if state["W_dec"].ndim != 2 or not all(t.is_floating_point() for t in state.values()):
            raise check.fail("has a W_dec that is not a 2-d float matrix")
        d, md = (int(n) for n in state["W_dec"].shape)
        if d < 1 or md < d or md % d:
            raise check.fail(f"has a W_dec of shape {(d, md)} (features must be a multiple of {d})")
        k = check.whole(check.key(info, "k"), "k", 1, md)
        shapes = {"W_enc": (md, d), "b_enc": (md,), "b_pre": (d,)}
        for name, shape in shapes.items():
            if tuple(state[name].shape) != shape:
                raise check.fail(f"has {name} of shape {tuple(state[name].shape)}, expected {shape}")
        sae = cls(d, md // d, k)
        sae.load_state_dict({n: t.float() for n, t in state.items()})
        return sae, info


def _as_tensor(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(data, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] < 2:
        raise EngineError(f"SAE data must be (N ≥ 2, d) activations, got shape {tuple(x.shape)}")
    return x


def train_sae(data: np.ndarray, expansion: int = 4, k: int = 16, epochs: int = 5, batch_size: int = 512,
              lr: float = 1e-3, seed: int = 0, log: list[float] | None = None) -> TopKSAE:
    """Train a :class:`TopKSAE` on ``(N, d)`` activations; ``log`` receives the mean loss per epoch."""
    x = _as_tensor(data)
    if epochs < 1:
        raise EngineError(f"epochs must be at least 1, got {epochs}")
    sae = TopKSAE(x.shape[1], expansion, k, seed)
    with torch.no_grad():
        sae.b_pre.copy_(x.mean(dim=0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for start in range(0, x.shape[0], batch_size):
            batch = x[order[start:start + batch_size]]
            recon, _ = sae(batch)
            loss = ((recon - batch) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sae.normalise_decoder()
            total += loss.item() * batch.shape[0]
        if log is not None:
            log.append(total / x.shape[0])
    return sae.eval()


@torch.no_grad()
def feature_activations(sae: TopKSAE, data: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """``(N, md)`` sparse codes of ``data``."""
    x = _as_tensor(data)
    return torch.cat([sae.encode(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).numpy()


@torch.no_grad()
def sae_stats(sae: TopKSAE, data: np.ndarray, high_freq: float = 0.1) -> dict[str, float]:
    """Normalised MSE, fraction of dead and of high-frequency features on ``data``."""
    x = _as_tensor(data)
    recon, f = sae(x)
    nmse = float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-30))
    rate = (f > 0).float().mean(dim=0)
    return {"nmse": nmse, "dead_fraction": float((rate == 0).float().mean()),
            "high_freq_fraction": float((rate > high_freq).float().mean()), "high_freq_threshold": high_freq,
            "n_features": sae.n_features, "k": sae.k, "tokens": int(x.shape[0])}


def tfidf_scores(f_concept: np.ndarray, f_other: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """TADA Eq. 6: ``μ_j(P_c) · log(1 + 1 / (μ_j(P_c̃) + ε))`` from ``(N, md)`` codes of each set."""
    if f_concept.size == 0 or f_other.size == 0:
        raise EngineError("TF-IDF scoring needs activations of both prompt sets: both are required")
    mu_c = np.asarray(f_concept, dtype=np.float64).mean(axis=0)
    mu_o = np.asarray(f_other, dtype=np.float64).mean(axis=0)
    return mu_c * np.log1p(1.0 / (mu_o + eps))


def sae_steering_vectors(sae: TopKSAE, scores: np.ndarray, tau: int, site: str, model_id: str,
                         concept: str = "", positive: Sequence[str] = (), negative: Sequence[str] = ()
                         ) -> SteeringVectors:
    """TADA Eq. 7: the sum of the decoder columns of the ``tau`` best-scoring features."""
    if not 1 <= tau <= sae.n_features:
        raise EngineError(f"τ={tau} must be between 1 and the feature count {sae.n_features}")
    top = np.argsort(-np.asarray(scores), kind="stable")[:tau]
    v = sae.W_dec.detach().numpy()[:, top].sum(axis=1).astype(np.float32)
    return SteeringVectors({site: v}, model_id, "sae", concept, list(positive), list(negative), False,
                           {"features": top.tolist(), "tau": int(tau)})


class FeatureBrowser:
    """Feature-level views over an :class:`ActivationSet` and its SAE codes."""

    def __init__(self, sae: TopKSAE, acts: ActivationSet) -> None:
        self.sae = sae
        self.acts = acts
        self.codes = feature_activations(sae, acts.data)

    def _check(self, feature: int) -> None:
        if not 0 <= feature < self.sae.n_features:
            raise EngineError(f"unknown feature {feature}: the SAE has features 0-{self.sae.n_features - 1}")

    def top_examples(self, feature: int, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` runs × steps where ``feature`` is most active (mean over their tokens)."""
        self._check(feature)
        rows = []
        for i, r in enumerate(self.acts.runs):
            a, b = r["rows"]
            col = self.codes[a:b, feature]
            rows.append({"index": i, "prompt": r["prompt"], "seed": r["seed"], "step": r["step"],
                         "mean": float(col.mean()), "max": float(col.max()), "active": float((col > 0).mean())})
        rows.sort(key=lambda d: -d["mean"])
        return rows[:n]

    def feature_map(self, feature: int, index: int, target: tuple[int, int] = DEFAULT_TARGET) -> np.ndarray:
        """Time × mel map ``(T, F)`` of ``feature`` on run-step ``index`` (its query lattice)."""
        self._check(feature)
        run = self.acts.runs[index]
        if run.get("queries") is not None:
            raise EngineError("this run-step kept a subset of queries: collect without tokens_per_step to map it")
        if not run.get("lattice"):
            raise EngineError(f"the backend reported no query lattice for {self.acts.site}: it cannot be mapped")
        a, b = run["rows"]
        t_l, f_l = run["lattice"]
        offset = run["n_queries"] - t_l * f_l  # Stable Audio: a leading global token
        return lattice_to_grid(self.codes[a:b, feature], (t_l, f_l), target, query_offset=offset)


@dataclass
class ConceptSAE:
    """One concept's SAE at one layer: the activations of its positive and negative prompts, the
    trained TopK SAE (in ``browser``, with the codes), the features' TF-IDF scores for the concept
    (TADA Eq. 6) and the loss per epoch. What ``sae`` (the command) writes and the GUI browses."""

    browser: FeatureBrowser
    scores: np.ndarray
    losses: list[float]
    concept: str
    positive: list[str]
    negative: list[str]

    @property
    def sae(self) -> TopKSAE:
        return self.browser.sae

    @property
    def acts(self) -> ActivationSet:
        return self.browser.acts

    def stats(self) -> dict[str, float]:
        return sae_stats(self.sae, self.acts.data)

    def steering_vectors(self, tau: int, model_id: str) -> SteeringVectors:
        """The top-``tau`` features' decoder columns summed (Eq. 7), as steering vectors."""
        return sae_steering_vectors(self.sae, self.scores, min(tau, self.sae.n_features), self.acts.site, model_id,
                                    self.concept, self.positive, self.negative)


def train_concept_sae(backend, concept: str, layer, steps: int, guidance: float, duration: float,
                      seeds: Sequence[int] = (0,), *, n_bases: int | None = None, expansion: int = 4, k: int = 16,
                      epochs: int = 10, tokens_per_step: int | None = None,
                      progress: Callable[[int, int], None] | None = None, runner: Runner | None = None) -> ConceptSAE:
    """Collect the concept's steering-set activations at ``layer``, train a TopK SAE on them and
    score its features by TF-IDF (positive vs negative prompts): the one path of the ``sae``
    command and the GUI's SAE panel."""
    from engine.interventions.prompt_sets import steering_set

    s = steering_set(concept, embedded=backend.family == "embedded", n_bases=n_bases)
    acts = collect_activations(backend, s.positive + s.negative, layer, steps, guidance, duration, seeds,
                               tokens_per_step, progress, runner)
    losses: list[float] = []
    sae = train_sae(acts.data, expansion, k, epochs, log=losses)
    browser = FeatureBrowser(sae, acts)
    scores = tfidf_scores(browser.codes[acts.rows_of(s.positive)], browser.codes[acts.rows_of(s.negative)])
    return ConceptSAE(browser, scores, losses, concept, list(s.positive), list(s.negative))
