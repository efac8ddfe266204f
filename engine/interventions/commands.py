"""One function per headless command (``python main.py patch|caa|sae|steer|ablate``).

Each takes a dataclass of options, writes its results into ``out`` (JSON, plus ``.npz`` /
``.safetensors`` / ``.wav`` as fits) and returns the folder or file it wrote. ``out`` is claimed with
:class:`engine.output_dir.Output` before the model is loaded: a bad ``out`` fails at once, and a
failed run leaves nothing behind.

``patch``, ``caa``, ``sae`` and ``steer --eval-alphas`` take a :class:`~engine.cluster.ClusterSpec`
(``cluster``, from ``--ray``): their work items then run on Ray workers (:mod:`engine.interventions.jobs`)
and this process, alone, writes the same files as a local run. The spec is left out of the
``options`` written with the results, so the files are identical too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic_io import atomic_write
from engine.cluster import ClusterSpec
from engine.output_dir import Output
from engine.recipe import Recipe
from engine.types import EngineError, GenerationRequest
from engine.work_items import cluster_runner

Progress = Callable[[int, int], None] | None


def _backend(model: str, device: str):
    from engine.backends.registry import load_backend

    return load_backend(model, device=device)


def _seeds(spec: str | list[int]) -> list[int]:
    if isinstance(spec, list):
        return spec
    try:
        return [int(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise EngineError(f"bad seeds {spec!r}: write them as 0,1,2") from None


def _floats(spec: str) -> list[float]:
    try:
        return [float(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise EngineError(f"bad number list {spec!r}: write it as -10,0,10") from None


def _recorded(o: Any) -> dict[str, Any]:
    """The options as written with the results: without ``cluster`` (where, not what, is computed)."""
    return {k: v for k, v in asdict(o).items() if k != "cluster"}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    import soundfile as sf

    atomic_write(path, lambda tmp: sf.write(tmp, np.asarray(audio, dtype=np.float32), sr, format="WAV"))


@dataclass(frozen=True, kw_only=True)
class PatchOptions(Recipe):
    concept: str
    out: str
    prompt_set: str | None = None  # None: the first set holding the concept
    layers: str | None = None
    seeds: str = "0"
    mode: str = "kv"
    max_pairs: int | None = None
    scorer: str | None = None  # None: the shipped instrument scorer; "band-template"; "clap:<folder>"
    cluster: ClusterSpec = ClusterSpec()


def run_patch(o: PatchOptions, progress: Progress = None) -> Path:
    """Layer sweep with Eq. 9 impact; writes ``patch_<concept>.json``."""
    o.validate(require_prompt=False)
    o.cluster.validate()
    from engine.interventions.jobs import PatchJob
    from engine.interventions.patching import SweepSettings, patch_sweep, sweep_query
    from engine.interventions.prompt_sets import find_concept
    from engine.interventions.scorers import load_scorer

    cp = find_concept(o.concept, o.prompt_set)
    with Output(o.out, mode="extend") as claim:  # one file per concept: an existing folder is added to
        backend = _backend(o.model, o.device)
        scorer = load_scorer(o.scorer, None, o.device)
        query = sweep_query(cp, scorer)  # the instrument scorer refuses an unknown concept here
        pairs = cp.pairs[: o.max_pairs] if o.max_pairs else cp.pairs
        job = PatchJob(o.model, o.device, o.scorer, SweepSettings(query, o.mode, o.steps, o.guidance, o.duration))
        with cluster_runner(o.cluster, job) as runner:
            report = patch_sweep(backend, pairs, query, scorer, o.layers, _seeds(o.seeds), o.steps, o.guidance,
                                 o.duration, o.mode, cp.concept, progress, runner)
        name = f"patch_{cp.concept.replace(' ', '_')}.json"
        warnings = list(backend.warnings)
        if not report.measurable:
            warnings.append(f"the {scorer.name} scorer rates prompts with {cp.concept!r} no higher than those "
                            "without it: the impacts and functional layers of this sweep are not meaningful")
        _write_json(claim.work / name, {"model": backend.model_id, "family": backend.family, "options": _recorded(o),
                                        "warnings": warnings, **report.to_dict(),
                                        "functional_top2": report.functional_layers(2) if report.measurable else []})
    return claim.final / name


@dataclass(frozen=True, kw_only=True)
class CAAOptions(Recipe):
    concept: str
    out: str  # .npz or .safetensors file
    positive: list[str] = field(default_factory=list)  # empty: the shipped templates
    negative: list[str] = field(default_factory=list)
    n_bases: int | None = None
    layers: str | None = None
    seeds: str = "0"
    per_step: bool = False
    cluster: ClusterSpec = ClusterSpec()


def run_caa(o: CAAOptions, progress: Progress = None) -> Path:
    """CAA vectors from contrastive prompts; writes the vector file ``out``."""
    o.validate(require_prompt=False)
    o.cluster.validate()
    from engine.interventions.caa import VECTOR_SUFFIXES, compute_caa
    from engine.interventions.jobs import ActivationJob
    from engine.interventions.prompt_sets import steering_set

    suffix = Path(o.out).suffix
    if suffix not in VECTOR_SUFFIXES:
        raise EngineError(f"--out {o.out} must end in .npz or .safetensors (steering-vector file formats)")
    with Output(o.out, kind="file") as claim:
        backend = _backend(o.model, o.device)
        pos, neg = list(o.positive), list(o.negative)
        if not pos and not neg:
            s = steering_set(o.concept, embedded=backend.family == "embedded", n_bases=o.n_bases)
            pos, neg = s.positive, s.negative
        with cluster_runner(o.cluster, ActivationJob(o.model, o.device)) as runner:
            vectors = compute_caa(backend, pos, neg, o.layers, o.steps, o.guidance, o.duration, _seeds(o.seeds),
                                  o.per_step, o.concept, progress, runner)
        vectors.save(claim.work)
    return claim.final


@dataclass(frozen=True, kw_only=True)
class SAEOptions(Recipe):
    concept: str
    layer: str
    out: str
    n_bases: int | None = None
    seeds: str = "0"
    expansion: int = 4
    k: int = 16
    epochs: int = 10
    tau: int = 20
    tokens_per_step: int | None = None
    cluster: ClusterSpec = ClusterSpec()


def run_sae(o: SAEOptions, progress: Progress = None) -> Path:
    """Collect, train, score (TF-IDF) and write ``sae.safetensors``, ``sae_<concept>.npz``, ``sae_report.json``."""
    o.validate(require_prompt=False)
    o.cluster.validate()
    from engine.interventions.jobs import ActivationJob
    from engine.interventions.sae import sae_stats, train_concept_sae

    with Output(o.out) as claim:
        backend = _backend(o.model, o.device)
        with cluster_runner(o.cluster, ActivationJob(o.model, o.device)) as runner:
            trained = train_concept_sae(backend, o.concept, o.layer, o.steps, o.guidance, o.duration, _seeds(o.seeds),
                                        n_bases=o.n_bases, expansion=o.expansion, k=o.k, epochs=o.epochs,
                                        tokens_per_step=o.tokens_per_step, progress=progress, runner=runner)
        sae, acts, scores, losses = trained.sae, trained.acts, trained.scores, trained.losses
        vec = trained.steering_vectors(o.tau, backend.model_id)
        folder = claim.work
        sae.save(folder / "sae.safetensors", {"site": acts.site, "model_id": backend.model_id})
        vec.save(folder / f"sae_{o.concept.replace(' ', '_')}.npz")
        top = np.argsort(-scores)[:o.tau]
        _write_json(folder / "sae_report.json", {
            "model": backend.model_id, "site": acts.site, "options": _recorded(o), "loss_per_epoch": losses,
            "stats": sae_stats(sae, acts.data), "top_features": [{"feature": int(j), "tfidf": float(scores[j])}
                                                                 for j in top]})
    return claim.final


@dataclass(frozen=True, kw_only=True)
class SteerOptions(Recipe):
    vectors: str
    out: str
    alpha: float = 10.0
    layers: str | None = None  # None: every layer the vectors cover
    renorm: bool = False
    halves: str = "both"
    # evaluation mode (TADA Table 1 shape): a list of α and functional layers
    eval_alphas: str | None = None
    functional: str | None = None
    eval_prompts: list[str] = field(default_factory=list)
    eval_seeds: str = "0"
    scorer: str | None = None
    query: str | None = None
    cluster: ClusterSpec = ClusterSpec()  # evaluation mode only


def run_steer(o: SteerOptions, progress: Progress = None) -> Path:
    """Generate steered (and unsteered) audio, or with ``eval_alphas`` run :func:`evaluate_steering`."""
    o.validate(require_prompt=True)
    o.cluster.validate()
    if o.cluster.distributed and not o.eval_alphas:
        raise EngineError("--ray runs the evaluation over α: give --eval-alphas (one steered generation runs here)")
    with Output(o.out) as claim:
        _steer(o, claim.work, progress)
    return claim.final


def _steer(o: SteerOptions, folder: Path, progress: Progress) -> None:
    from engine.interventions.caa import Steer, SteeringVectors
    from engine.interventions.layers import resolve_layers

    backend = _backend(o.model, o.device)
    vectors = SteeringVectors.load(o.vectors)
    if vectors.model_id != backend.model_id:
        raise EngineError(f"the vectors were computed on {vectors.model_id}, not {backend.model_id}: "
                          "load that model or recompute them")
    if o.eval_alphas:
        from engine.interventions.jobs import SteerJob
        from engine.interventions.scorers import load_scorer, template_for
        from engine.interventions.steer_eval import SteerSettings, evaluate_steering

        scorer = load_scorer(o.scorer, None, o.device)
        query = o.query or vectors.concept
        if scorer.name == "band-template":
            template_for(query)
        elif hasattr(scorer, "check_concept"):
            scorer.check_concept(query)
        if not o.functional:
            raise EngineError("evaluation needs --functional LAYERS (e.g. from `python main.py patch`)")
        func = resolve_layers(backend, o.functional)
        covered = vectors.sites
        sets = {"functional": func, "all": covered, "all_but_functional": [s for s in covered if s not in func]}
        sets = {k: v for k, v in sets.items() if v}  # SAE vectors of one functional layer: no complement
        job = SteerJob(o.model, o.device, o.scorer, vectors,
                       SteerSettings(query, o.steps, o.guidance, o.duration, o.renorm, o.halves))
        with cluster_runner(o.cluster, job) as runner:
            result = evaluate_steering(backend, vectors, sets, o.eval_prompts or [o.prompt],
                                       _floats(o.eval_alphas), query, scorer, _seeds(o.eval_seeds), o.steps,
                                       o.guidance, o.duration, o.renorm, o.halves, progress, runner)
        _write_json(folder / "steer_eval.json", {"model": backend.model_id, "family": backend.family,
                                                 "warnings": list(backend.warnings), "vectors": o.vectors,
                                                 **result})
        return
    sites = resolve_layers(backend, o.layers) if o.layers else None
    req = {**vars(o.settings()), "capture": False}  # the recipe's run settings, no capture
    plain = backend.generate(GenerationRequest(**req))
    steer = Steer(vectors, o.alpha, sites, o.renorm, o.halves)
    steered = backend.generate(GenerationRequest(**req, interventions=(steer,)))
    _write_wav(folder / "unsteered.wav", plain.audio, plain.sample_rate)
    _write_wav(folder / "steered.wav", steered.audio, steered.sample_rate)
    _write_json(folder / "steer.json", {"model": backend.model_id, "options": _recorded(o),
                                         "intervention": steer.describe(), "warnings": steered.warnings})


@dataclass(frozen=True, kw_only=True)
class AblateOptions(Recipe):
    out: str
    mode: str = "zero"
    layers: str | None = None
    per_layer: bool = False  # one run per layer instead of all layers at once


def run_ablate(o: AblateOptions, progress: Progress = None) -> Path:
    """Baseline and ablated runs; writes wavs and ``ablate.json`` with mel distances to the baseline."""
    o.validate(require_prompt=True)
    with Output(o.out) as claim:
        _ablate(o, claim.work, progress)
    return claim.final


def _ablate(o: AblateOptions, folder: Path, progress: Progress) -> None:
    from engine.interventions.ablation import Ablation
    from engine.interventions.layers import layer_numbers, resolve_layers
    from engine.interventions.steer_eval import mel_distance_db

    backend = _backend(o.model, o.device)
    sites = resolve_layers(backend, o.layers)
    Ablation(sites, o.mode)  # validates the mode before any run
    req = {**vars(o.settings()), "capture": False}  # the recipe's run settings, no capture
    groups = [[s] for s in sites] if o.per_layer else [sites]
    base = backend.generate(GenerationRequest(**req))
    _write_wav(folder / "baseline.wav", base.audio, base.sample_rate)
    rows = []
    for i, group in enumerate(groups):
        r = backend.generate(GenerationRequest(**req, interventions=(Ablation(group, o.mode),)))
        name = f"ablated_{i:02d}.wav" if o.per_layer else "ablated.wav"
        _write_wav(folder / name, r.audio, r.sample_rate)
        rows.append({"layers": layer_numbers(backend, group), "sites": group, "file": name,
                     "mel_distance_db": mel_distance_db(r.audio, base.audio, r.sample_rate, backend.mel_spec())})
        if progress is not None:
            progress(i + 1, len(groups))
    _write_json(folder / "ablate.json", {"model": backend.model_id, "options": asdict(o), "runs": rows})
