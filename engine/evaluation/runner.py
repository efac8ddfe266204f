"""``python main.py eval``: the AIBA evaluation over a Slakh-format dataset, resumable.

For each usable track (:class:`engine.data.slakh.SlakhDataset`), each evaluated class with a stem
in the track and each prompt template of the class, one *item* is generated (fixed seed), its
attention mapped to the grid (:mod:`engine.evaluation.maps`) and scored against the item's ground
truths (:mod:`engine.evaluation.ground_truth`). Outputs in ``out/``:

``config.json``          the settings that determine the numbers (a resumed run must match them)
``items.jsonl``          one scored item per line, appended and flushed as soon as it is done
``errors.jsonl``         items that failed and tracks the reader skipped (the run goes on)
``maps/<item>.npz``      the item's map, the generated clip's mel (dB), the ground-truth masks
``heads/<item>.npz``     per-head concept maps and label-free log-ratios (``per_head=True``)
``layer_weights.json``   fitted layer weights (``weighting="learned"``)
``table1_*``, ``table3_*``, ``profiles_*`` (.csv/.md, one per ground-truth kind), ``figure2_profiles.png``,
``figure3_examples.png``, ``report.json``, and ``heads/`` results of :func:`run_head_selection`.

The item's stem window is chosen before generating (:mod:`engine.evaluation.windows`): an item
whose class does not sound enough is refused without a generation.

Resuming: items whose id is in ``items.jsonl`` are not generated again; failed items are retried.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.aggregate import fit_layer_weights
from engine.analysis.melscale import grid_hz, power_to_db
from engine.analysis.templates import TEMPLATE_RANGES, stem_mel_grid
from engine.atomic_io import atomic_write
from engine.cluster import ClusterSpec, cluster_session, in_item_order, map_items
from engine.data.classes import MAIN_CLASSES
from engine.data.slakh import SlakhDataset, Track
from engine.evaluation.ground_truth import GT_KINDS, class_audio, item_ground_truth
from engine.evaluation.head_selection import run_head_selection
from engine.evaluation.maps import MapSettings, concept_map, head_data, site_maps, time_only
from engine.evaluation.prompts import class_prompts, load_templates
from engine.evaluation.scoring import attention_profile, score_map
from engine.evaluation.tables import (
    check_item_record,
    in_order,
    read_jsonl,
    safe_name,
    write_tables,
)
from engine.evaluation.windows import Window, choose_window, class_track_audio
from engine.output_dir import Output, guarded
from engine.probe.kept_maps import KeptMaps
from engine.recipe import Recipe
from engine.types import CancelToken, EngineError, GenerationRequest

Progress = Callable[[int, int], None]
SEED_MODES = ("per_track", "fixed")
WINDOW_MODES = ("active", "fixed")
# settings that do not change any number (left out of the resume check)
_NOT_IN_CONFIG = ("out", "resume", "figures", "device", "memory_budget_mb", "prompt", "negative_prompt",
                  "cluster")


@dataclass(frozen=True, kw_only=True)
class EvalOptions(Recipe):
    """What ``eval`` does; mirrors the command-line flags (``--dataset``, ``--out``, ...)."""

    dataset: str
    out: str
    classes: list[str] | None = None  # None: Bass, Drums, Guitar, Piano, Strings, Organ
    templates: str | None = None  # YAML file; None: resources/prompts/eval_templates.yaml
    seed_mode: str = "per_track"  # per_track: seed + track number; fixed: one seed for all
    offset: float = 0.0  # start of the stem window in the track (s), or of the search for it
    window: str = "active"  # active: first window from offset where the class sounds; fixed: offset
    min_active: float = 0.25  # share of the window's 0.1 s frames in which the class must sound
    gt_range: str = "region"  # headline knowledge-driven ground truth: region, fundamental or band
    grid: tuple[int, int] = (128, 64)
    max_tracks: int | None = None
    split: str | None = None
    cross_only: bool = True
    pooling: str = "keyword"
    aggregator: str = "mean"
    topk: int = 3
    weighting: str = "uniform"
    alpha: float = 1.0
    beta: float = 4.0
    tau: float = 0.5
    per_head: bool = True
    resume: bool = True
    fit_split: str | None = None  # learned weighting: fit on this split of the dataset
    fit_tracks: int = 4  # learned weighting without fit_split: first N tracks, not evaluated
    fit_target: str | None = None  # ground truth the layer weights are fitted to (None: gt_range)
    head_k: int | None = None  # heads kept by head selection (None: a quarter of all heads)
    head_metric: str = "ap"
    threshold_db: float = -30.0
    min_share: float = 0.1
    memory_budget_mb: float = 4096.0
    figures: bool = True
    cluster: ClusterSpec = ClusterSpec()  # where items run (docs/CLUSTER.md); changes no number
    extra: dict[str, Any] = field(default_factory=dict)

    def map_settings(self) -> MapSettings:
        return MapSettings(grid=tuple(self.grid), pooling=self.pooling, aggregator=self.aggregator,
                           topk=self.topk, weighting=self.weighting.replace("-", "_"), alpha=self.alpha,
                           beta=self.beta, cross_only=self.cross_only)

    def config(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _NOT_IN_CONFIG:
            d.pop(k, None)
        d["grid"] = list(self.grid)
        d["dataset"] = str(Path(self.dataset).expanduser().resolve())
        return d


def validate(o: EvalOptions) -> None:
    """Reject bad options before anything is loaded; each message says what to do."""
    o.map_settings().check()
    o.validate(require_prompt=False)
    o.cluster.validate()
    if o.offset < 0:
        raise EngineError(f"--offset must be >= 0 seconds (got {o.offset})")
    if not 0 < o.tau < 1:
        raise EngineError(f"--tau must be between 0 and 1 (got {o.tau})")
    if len(o.grid) != 2 or min(o.grid) < 2:
        raise EngineError(f"--grid needs two sizes >= 2, e.g. 128x64 (got {o.grid})")
    if o.seed_mode not in SEED_MODES:
        raise EngineError(f"--seed-mode must be one of {', '.join(SEED_MODES)}")
    if o.window not in WINDOW_MODES:
        raise EngineError(f"--window must be one of {', '.join(WINDOW_MODES)} (got {o.window!r})")
    if not 0 < o.min_active <= 1:
        raise EngineError(f"--min-active must be in (0, 1] (got {o.min_active})")
    if o.gt_range not in TEMPLATE_RANGES:
        raise EngineError(f"--gt-range must be one of {', '.join(TEMPLATE_RANGES)} (got {o.gt_range!r})")
    if o.fit_target is not None and o.fit_target not in GT_KINDS:
        raise EngineError(f"--fit-target must be one of {', '.join(GT_KINDS)}")
    if o.max_tracks is not None and o.max_tracks < 1:
        raise EngineError(f"--max-tracks must be at least 1 (got {o.max_tracks})")
    if o.topk < 1:
        raise EngineError(f"--topk must be at least 1 (got {o.topk})")


@dataclass(frozen=True)
class Item:
    """One (track, class, template) evaluation item."""

    id: str
    track: Track
    inst_class: str
    word: str
    template: int
    prompt: str
    seed: int


def track_number(track: Track, fallback: int) -> int:
    digits = re.sub(r"\D", "", track.id)
    return int(digits) if digits else fallback


def build_items(tracks: list[Track], options: EvalOptions, templates) -> list[Item]:
    """Items in track, class, template order (a track without an evaluated class adds none)."""
    classes = options.classes or list(MAIN_CLASSES)
    items = []
    for i, track in enumerate(tracks):
        present = set(track.classes())
        seed = options.seed + (track_number(track, i) if options.seed_mode == "per_track" else 0)
        for c in classes:
            if c not in present:
                continue
            cp = class_prompts(templates, c)
            for t, prompt in enumerate(cp.prompts):
                item_id = f"{track.split or '-'}/{track.id}/{c}/{t}"
                items.append(Item(item_id, track, c, cp.word, t, prompt, seed))
    return items


class _Writer:
    """Append-only JSON lines, flushed to disk after every record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with guarded(self.path), open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def repair_jsonl(path: Path) -> None:
    """Cut a torn last line (a write interrupted mid-record) so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


@dataclass(frozen=True)
class ItemResult:
    """What one item's computation returns (in a worker or here); the driver writes it."""

    record: dict[str, Any]  # the items.jsonl line
    maps: bytes  # maps/<item>.npz, compressed where it was computed (workers share the zlib work)
    heads: bytes | None  # heads/<item>.npz (per-head capture)
    generated: int  # backend generations this item needed (0: reused the previous item's)


class Evaluator:
    """Generates, maps and scores items with one backend (one generation per prompt and seed)."""

    def __init__(self, backend, options: EvalOptions, layer_weights: dict[str, float] | None = None):
        self.backend = backend
        self.o = options
        self.settings = options.map_settings()
        self.spec = backend.mel_spec()
        self.layer_weights = layer_weights
        self.sites = self._sites()
        self._cache: dict[tuple[str, int], Any] = {}
        self._windows: dict[tuple[str, str], Window | EngineError] = {}
        self.generate_calls = 0

    def _sites(self) -> list[str] | None:
        sites = self.backend.sites()
        cross = [s for s in sites if s.kind == "cross"]
        contexts = {s.context for s in cross}
        main = next((c for c in ("text", "t5") if c in contexts), None)
        chosen = [s.name for s in cross if main is None or s.context == main]
        if not self.o.cross_only:
            chosen += [s.name for s in sites if s.kind == "self"]
        return chosen or None

    def request(self, item: Item) -> GenerationRequest:
        """The generation of the item's prompt and seed, with the maps an item keeps (its concept map
        and, per-head, each site's head maps) for the memory budget to count."""
        maps = KeptMaps(grid=tuple(self.o.grid), method=self.o.aggregator, k=self.o.topk, pooled=True,
                        head_maps=self.o.per_head)
        return GenerationRequest(
            prompt=item.prompt, seed=item.seed, steps=self.o.steps, guidance=self.o.guidance,
            duration=self.o.duration, sites=self.sites, per_head=self.o.per_head,
            memory_budget_mb=self.o.memory_budget_mb, maps=maps)

    def run(self, item: Item, cancel: CancelToken | None = None):
        """The backend's run of the item's prompt and seed (one cached result is reused)."""
        key = (item.prompt, item.seed)
        if key not in self._cache:
            self._cache.clear()
            self.generate_calls += 1
            result = self.backend.generate(self.request(item), None, cancel)
            bad = [w for w in result.warnings if "NaN" in w or " inf" in w]
            if bad:
                raise EngineError(f"{bad[0]}; try fewer steps or another seed")
            if result.frames_dir is not None:
                raise EngineError("frames were streamed to disk: raise --memory-budget-mb")
            self._cache[key] = result
        return self._cache[key]

    def window(self, item: Item) -> Window:
        """The item's stem window (:mod:`engine.evaluation.windows`), cached per track and class.

        Raises (before anything is generated) when the class does not sound enough in any window.
        """
        key = (item.track.id, item.inst_class)
        if key not in self._windows:
            try:
                audio = class_track_audio(item.track, item.inst_class, self.spec.sample_rate)
                self._windows[key] = choose_window(
                    audio, self.spec.sample_rate, self.o.duration, self.o.offset,
                    search=self.o.window == "active", min_active=self.o.min_active,
                    label=f"{item.inst_class} in {item.track.id}")
            except EngineError as exc:
                self._windows[key] = exc
        found = self._windows[key]
        if isinstance(found, EngineError):
            raise found
        return found

    def stem(self, item: Item) -> np.ndarray:
        """The class's stem audio in its window (read before generating: a bad stem costs nothing)."""
        return class_audio(item.track, item.inst_class, self.spec.sample_rate,
                           self.window(item).start_s, self.o.duration)

    def ground_truth(self, item: Item, stem: np.ndarray, result):
        return item_ground_truth(item.inst_class, stem, self.spec.sample_rate, result.audio,
                                 result.sample_rate, self.spec, tuple(self.o.grid), self.o.duration,
                                 self.o.threshold_db, self.o.min_share)

    def score(self, item: Item, folder: Path, cancel: CancelToken | None = None) -> dict[str, Any]:
        """Generate (or reuse), map, score; writes the item's npz files; returns its record."""
        return write_item(folder, item, self.compute(item, cancel))

    def compute(self, item: Item, cancel: CancelToken | None = None) -> ItemResult:
        """Generate (or reuse), map and score one item; writes nothing (see :func:`write_item`)."""
        start = time.perf_counter()
        calls = self.generate_calls
        window = self.window(item)
        stem = self.stem(item)
        result = self.run(item, cancel)
        g = concept_map(result, item.word, self.settings, self.layer_weights)
        gt = self.ground_truth(item, stem, result)
        scores = score_map(g, gt, self.o.tau, time_only=time_only(result))
        grid = tuple(self.o.grid)
        mel_db = power_to_db(stem_mel_grid(result.audio, result.sample_rate, self.spec, grid))
        stem_db = power_to_db(stem_mel_grid(stem, self.spec.sample_rate, self.spec, grid))
        maps = npz_bytes(map=g.astype(np.float32), mel_db=mel_db.astype(np.float32),
                         stem_mel_db=stem_db.astype(np.float32), **{f"gt_{k}": m for k, m in gt.masks.items()})
        notes = [w for w in result.warnings if w not in self.backend.warnings]
        heads = None
        if self.o.per_head:
            hd = head_data(result, item.word, grid)
            arrays = {f"map/{s}": m.astype(np.float16) for s, m in hd.maps.items()}
            arrays.update({f"ratio/{s}": r for s, r in hd.log_ratio.items()})
            heads = npz_bytes(**arrays)
        record = {
            "id": item.id, "track": item.track.id, "split": item.track.split,
            "class": item.inst_class, "word": item.word, "template": item.template,
            "prompt": item.prompt, "seed": item.seed, "scores": scores,
            "window_start_s": window.start_s, "window_active_share": window.active_share,
            "profiles": {"attention": attention_profile(g).tolist(),
                         **{k: np.asarray(v, dtype=float).tolist() for k, v in gt.profiles.items()}},
            "warnings": notes,
            "elapsed_s": round(time.perf_counter() - start, 4),
        }
        return ItemResult(record, maps, heads, self.generate_calls - calls)


def write_item(folder: Path, item: Item, result: ItemResult) -> dict[str, Any]:
    """The driver's side of an item: its npz files (atomic); returns the record to append."""
    name = safe_name(item.id)
    _write_bytes(folder / "maps" / f"{name}.npz", result.maps)
    if result.heads is not None:
        _write_bytes(folder / "heads" / f"{name}.npz", result.heads)
    return result.record


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """The bytes ``np.savez_compressed`` writes for ``arrays``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    """``data`` written atomically; a failed write is an OutputWriteError."""
    with guarded(path):
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


@dataclass(frozen=True)
class EvalJob:
    """The eval's :class:`~engine.cluster.WorkerJob`: a worker builds one :class:`Evaluator` (loads
    ``options.model``, or uses ``backend`` when one is given) and computes items with it.
    ``evaluator`` (this process only, never pickled) is the driver's own, with its ``cancel``."""

    options: EvalOptions
    layer_weights: dict[str, float] | None = None
    backend: Any = None
    evaluator: Any = field(default=None, compare=False, repr=False)
    cancel: Any = field(default=None, compare=False, repr=False)
    fit: bool = False  # items of the layer-weight fit: their per-layer maps and target (FitSample)

    def setup(self) -> Evaluator:
        if self.evaluator is not None:
            return self.evaluator
        backend = self.backend
        if backend is None:
            from engine.backends.registry import load_backend

            backend = load_backend(self.options.model, device=self.options.device)
        return Evaluator(backend, self.options, self.layer_weights)

    def run(self, ev: Evaluator, item: Item) -> ItemResult | FitSample:
        return fit_sample(ev, item, self.options, self.cancel) if self.fit else ev.compute(item, self.cancel)


def eval_job(ev: Evaluator, given: Any, cancel: CancelToken | None, fit: bool = False) -> EvalJob:
    """The job of a run: on Ray, workers that load the model (or use the ``given`` backend); in
    process, the driver's own evaluator ``ev`` with its ``cancel``. ``fit``: the layer-weight fit's."""
    weights = None if fit else ev.layer_weights
    if ev.o.cluster.distributed:
        return EvalJob(ev.o, weights, backend=given, fit=fit)
    return EvalJob(ev.o, weights, evaluator=ev, cancel=cancel, fit=fit)


@dataclass(frozen=True)
class FitSample:
    """One held-out item of the layer-weight fit: its per-layer maps ``(L, T, F)`` over ``sites``
    and the ground-truth mask ``(T, F)`` they are fitted to; ``generated``: generations it needed."""

    sites: tuple[str, ...]
    layer_maps: np.ndarray
    target: np.ndarray
    generated: int = 0


def fit_sample(ev: Evaluator, item: Item, options: EvalOptions, cancel: CancelToken | None = None) -> FitSample:
    """Generate ``item`` and take what the fit needs from it (on a worker, or here)."""
    calls = ev.generate_calls
    stem = ev.stem(item)
    result = ev.run(item, cancel)
    maps = site_maps(result, item.word, ev.settings)
    gt = ev.ground_truth(item, stem, result)
    sites = tuple(sorted(maps))
    return FitSample(sites, np.stack([maps[s] for s in sites]),
                     gt.masks[options.fit_target or options.gt_range].astype(np.float64), ev.generate_calls - calls)


def _write_json(path: Path, data: Any, indent: int = 2) -> None:
    text = json.dumps(data, indent=indent, default=str)
    with guarded(path):
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def prepare_folder(options: EvalOptions, out: Path) -> Path:
    """Fill the claimed folder ``out``: check a resumed run has the same settings, or clear our
    files when not resuming; write ``config.json``."""
    with guarded(out):
        (out / "maps").mkdir(exist_ok=True)
        (out / "heads").mkdir(exist_ok=True)
    cfg_path = out / "config.json"
    config = options.config()
    if cfg_path.is_file() and options.resume:
        from engine.loaders import Checker, read_json

        check = Checker(f"eval settings {cfg_path}", "use --no-resume or a new --out")
        old = check.table(read_json(cfg_path, check), "config")
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if diff:
            raise EngineError(f"{out} holds an eval with other settings ({', '.join(diff)}): "
                              "use the same settings, --no-resume, or a new --out")
    elif not options.resume:
        for name in ("items.jsonl", "errors.jsonl", "fit_items.jsonl", "layer_weights.json"):
            (out / name).unlink(missing_ok=True)
        for sub in ("maps", "heads"):
            shutil.rmtree(out / sub, ignore_errors=True)
            (out / sub).mkdir()
    _write_json(cfg_path, config)
    return out


def split_fit_tracks(dataset: SlakhDataset, options: EvalOptions) -> tuple[list[Track], list[Track]]:
    """``(eval tracks, fit tracks)``: fit tracks only for learned weighting (held out from eval)."""
    tracks = list(dataset.tracks)
    if options.map_settings().weighting != "learned":
        fit: list[Track] = []
    elif options.fit_split is not None:
        fit = list(SlakhDataset(options.dataset, options.fit_split).tracks)
    else:
        if len(tracks) <= options.fit_tracks:
            raise EngineError(f"learned weighting holds out {options.fit_tracks} tracks but the dataset "
                              f"has {len(tracks)}: lower --fit-tracks or give --fit-split")
        fit, tracks = tracks[: options.fit_tracks], tracks[options.fit_tracks:]
    if options.max_tracks is not None:
        tracks = tracks[: options.max_tracks]
    return tracks, fit


def fit_weights(ev: Evaluator, items: list[Item], out: Path, options: EvalOptions,
                cancel: CancelToken | None = None, backend: Any = None) -> dict[str, float]:
    """Fit layer weights (NNLS on the simplex) on held-out items; cached in layer_weights.json.
    With ``options.cluster`` the items are generated on the workers (``backend``: a given one)."""
    path = out / "layer_weights.json"
    if path.is_file():
        from engine.loaders import Checker, read_json

        check = Checker(f"layer weights {path}", "delete the file to fit them again")
        weights = check.table(check.key(check.table(read_json(path, check), "file"), "weights"), "weights")
        return {site: check.number(w, f"weight of {site!r:.60}") for site, w in weights.items()}
    layer_maps, targets, used, sites = [], [], [], None
    errors = _Writer(out / "errors.jsonl")
    job = eval_job(ev, backend, cancel, fit=True)
    for outcome in in_item_order(map_items(job, items, options.cluster, cancel=cancel)):
        if outcome.error is not None:  # collected, the fit goes on without the item
            errors.append({"id": outcome.item.id, "phase": "fit", "error": outcome.error})
            continue
        sample: FitSample = outcome.result
        if options.cluster.distributed:
            ev.generate_calls += sample.generated  # made on a worker
        sites = sites or list(sample.sites)
        layer_maps.append(sample.layer_maps)
        targets.append(sample.target)
        used.append(outcome.item.id)
    if not layer_maps or sites is None:
        raise EngineError("no held-out item could be used to fit layer weights: check errors.jsonl")
    w = fit_layer_weights(np.stack(layer_maps), np.stack(targets))
    weights = {s: float(v) for s, v in zip(sites, w, strict=True)}
    _write_json(path, {"weights": weights, "items": used, "target": options.fit_target or options.gt_range})
    return weights


def run_eval(options: EvalOptions, progress: Progress | None = None, backend=None,
             cancel: CancelToken | None = None) -> Path:
    """Run (or resume) the evaluation and return the output folder (see module docstring).

    ``backend`` overrides ``options.model`` (an already loaded backend, e.g. in tests or the GUI).
    """
    validate(options)
    templates = load_templates(options.templates)
    for c in options.classes or MAIN_CLASSES:
        class_prompts(templates, c)
    dataset = SlakhDataset(options.dataset, options.split)
    tracks, fit_tracks = split_fit_tracks(dataset, options)
    items = build_items(tracks, options, templates)
    if not items:  # refused before anything is created in --out
        raise EngineError(f"no usable track of {options.dataset} has a stem of the classes "
                          f"{', '.join(options.classes or MAIN_CLASSES)} ({dataset.summary()}): "
                          "check --dataset/--classes")
    # resumable: written in place; a folder this run created is removed again on an early error
    with Output(options.out, mode="resume") as claim:
        out = prepare_folder(options, claim.work)
        for name in ("items.jsonl", "errors.jsonl"):
            with guarded(out / name):
                repair_jsonl(out / name)
        given = backend
        if backend is None:  # on Ray the driver's copy only names the model (sites, mel definition)
            from engine.backends.registry import load_backend

            device = "cpu" if options.cluster.distributed else options.device
            backend = load_backend(options.model, device=device)
        claim.keep = True  # from here on errors.jsonl / items.jsonl are worth resuming from
        errors = _Writer(out / "errors.jsonl")
        known_errors = {(e.get("id"), str(e.get("error"))) for e in read_jsonl(out / "errors.jsonl")}
        for skipped in dataset.scan_report:
            rec = {"id": str(skipped.path.name), "phase": "scan", "error": skipped.reason}
            if (rec["id"], str(rec["error"])) not in known_errors:
                errors.append(rec)
        ev = Evaluator(backend, options)
        with cluster_session(options.cluster):  # one Ray instance: the fit, the items, the head selection
            if ev.settings.weighting == "learned":
                ev.layer_weights = fit_weights(ev, build_items(fit_tracks, options, templates), out, options,
                                               cancel, backend=given)
            done = {r["id"] for r in read_jsonl(out / "items.jsonl")}
            todo = [item for item in items if item.id not in done]
            job = eval_job(ev, given, cancel)
            skipped = len(items) - len(todo)
            if progress is not None and skipped:
                progress(skipped, len(items))
            started = time.perf_counter()
            new_items, failed = _score_items(job, todo, out, errors, options.cluster, cancel,
                                             None if progress is None
                                             else lambda n, _: progress(skipped + n, len(items)))
            if options.cluster.distributed:
                ev.generate_calls += new_items.generated
            if not done and not new_items.count:
                raise EngineError(nothing_scored(failed, claim.final / "errors.jsonl"))
            elapsed = time.perf_counter() - started
            finish(out, options, backend, ev, new_items.count, elapsed, order=[item.id for item in items])
    return claim.final


@dataclass
class _Tally:
    count: int = 0  # items scored this session
    generated: int = 0  # their generations


def _score_items(job: EvalJob, todo: list[Item], out: Path, errors: _Writer, cluster: ClusterSpec,
                 cancel: CancelToken | None, progress: Progress | None) -> tuple[_Tally, list[str]]:
    """Compute ``todo`` (here or on Ray) and write each item as it comes, in item order, so the
    files are those of a local run; returns the tally and the items' error lines."""
    writer = _Writer(out / "items.jsonl")
    tally, failed = _Tally(), []
    for outcome in in_item_order(map_items(job, todo, cluster, progress=progress, cancel=cancel)):
        if outcome.error is not None:
            failed.append(outcome.error)
            errors.append({"id": outcome.item.id, "phase": "item", "error": outcome.error})
            continue
        writer.append(write_item(out, outcome.item, outcome.result))
        tally.count += 1
        tally.generated += outcome.result.generated
    return tally, failed


def nothing_scored(reasons: list[str], errors_path: Path) -> str:
    """The one-line error of an eval in which every item failed: how many, and the commonest reasons
    (paths and quoted names replaced by ``…`` so that one cause over many files counts once)."""
    def cause(reason: str) -> str:
        text = re.sub(r"'[^']*'|\"[^\"]*\"|(?<![\w.])/[^\s:'\"]+", "…", reason)
        return text if len(text) <= 150 else text[:149] + "…"

    common = Counter(cause(r) for r in reasons).most_common(2)
    top = ", ".join(f"{n}x [{r}]" for r, n in common)
    return (f"no item could be scored: all {len(reasons)} items failed (commonest: {top}); "
            f"the reason for each is in {errors_path}")


def finish(out: Path, options: EvalOptions, backend, ev: Evaluator, new_items: int,
           elapsed: float, order: list[str] | None = None) -> dict[str, Any]:
    """Tables, figures, head selection and report.json from what is on disk; records are taken in
    ``order`` (item ids; others after, as in the file), so no number depends on the file's order."""
    records = in_order([check_item_record(r, out / "items.jsonl") for r in read_jsonl(out / "items.jsonl")],
                       order)
    scored = {r["id"] for r in records}
    open_errors = {(e["id"], str(e.get("error"))): e for e in read_jsonl(out / "errors.jsonl")
                   if e["id"] not in scored}  # resolved by a later retry: not counted
    report: dict[str, Any] = {
        "items": len(records), "errors": len(open_errors),
        "error_ids": sorted({e[0] for e in open_errors}),
        "generate_calls_this_session": ev.generate_calls,
        "new_items_this_session": new_items,
        "items_per_minute": (60.0 * new_items / elapsed) if new_items and elapsed > 0 else None,
        "model": getattr(backend, "model_id", options.model),
        "family": getattr(backend, "family", None),
        "model_warnings": list(getattr(backend, "warnings", [])),
        "layer_weights": ev.layer_weights,
        "primary_gt": options.gt_range,
    }
    if records:
        tables = write_tables(out, records, GT_KINDS, options.tau)
        report["table1"] = {gt: {a: t[a] for a in ("micro", "macro", "posweighted")}
                            for gt, t in tables.items()}
        if options.figures:
            from engine.evaluation.figures import figure2, figure3

            hz = grid_hz(ev.spec, options.grid[1])
            figure2(records, hz, out / "figure2_profiles.png",
                    [c for c in (options.classes or MAIN_CLASSES) if any(r["class"] == c for r in records)],
                    template=options.gt_range)
            examples = []
            for c in dict.fromkeys(r["class"] for r in records):
                rec = next(r for r in records if r["class"] == c)
                from engine.loaders import Checker, read_npz

                npz = out / "maps" / f"{safe_name(rec['id'])}.npz"
                check = Checker(f"map file {npz}", "re-run eval with --no-resume")
                data = read_npz(npz, check)
                examples.append({"title": f"{rec['prompt']} ({rec['track']})",
                                 "mel_db": check.array(check.key(data, "mel_db"), "mel_db", (2,), "f"),
                                 "map": check.array(check.key(data, "map"), "map", (2,), "f")})
            figure3(examples[:4], hz, options.duration, out / "figure3_examples.png")
        if options.per_head:
            try:
                report["head_selection"] = run_head_selection(
                    out, k=options.head_k, metric=options.head_metric, gt=options.gt_range,
                    tau=options.tau, figures=options.figures, order=order, cluster=options.cluster)
            except EngineError as exc:
                report["head_selection"] = {"skipped": str(exc)}
    _write_json(out / "report.json", _json_safe(report))
    return report


def _json_safe(value: Any) -> Any:
    """Replace nan/inf by None so report.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
