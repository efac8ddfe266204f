"""Selective head aggregation on the evaluation's per-head data (``heads/<item>.npz``).

Per class, heads (all cross-attention sites × heads of the main context) are ranked twice:

* **label-free**: ``s = mean_r s_{h,r} − λ·std_r s_{h,r}`` over the selection items' runs, where
  ``s_{h,r}`` is the head's log-ratio of attention per concept token to attention per other token
  (:mod:`engine.analysis.heads`); no ground truth is used;
* **oracle** (clearly labelled): the head's mean AP (or IoU) against the ground-truth mask over the
  selection items — it uses the labels the maps are judged by, so it is an upper reference only.

Tracks are split in two (sorted track ids, alternating): rankings come from the *selection* tracks,
scores from the *evaluation* tracks, so not even the oracle is scored on its own labels. With a
single track both halves are that track and the result is marked ``in_sample``.

Compared on the evaluation items: all heads (DAAM-style mean of every head map), label-free top-k,
label-free bottom-k and oracle top-k, by IoU@τ, AP and Pearson correlation of the frequency
profile with the stem profile. The ordered-weakening curves remove heads most-relevant first.
Head masks are saved as ``{site: [bool, ...]}`` (``GenerationRequest.head_mask``'s format).

The per-item work (reading an item's head maps, oracle scores, variant scores, weakening curves)
is a :class:`HeadJob` run through :func:`engine.cluster.map_items`, here or on Ray workers; the
driver reads each item's files as it sends the item (workers need no access to the folder) and
combines the results in item order.
Outputs carry the ground truth in their names, so runs with different ``gt`` sit side by side:
``heads_comparison_<gt>``, ``weakening_<gt>`` and ``heads/masks/<class>_ORACLE_<gt>_top<k>.json``
(label-free masks use no ground truth: ``heads/masks/<class>_labelfree_{top,bottom}<k>.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.heads import (
    oracle_head_scores,
    ordered_weakening,
    rank_heads,
    select_heads,
    selective_map,
)
from engine.analysis.metrics import average_precision, profile_correlation, tf_iou
from engine.cluster import ClusterSpec, cluster_session, map_items
from engine.evaluation.tables import check_item_record, in_order, read_jsonl, safe_name, write_table
from engine.types import EngineError

VARIANTS = ("all heads (DAAM-style)", "label-free top-k", "label-free bottom-k", "ORACLE top-k")


def load_head_data(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(maps {site: (H, T, F)}, log-ratios {site: (H,)})`` of one item, sites sorted; names,
    shapes and sizes are checked (:mod:`engine.loaders`) before use."""
    from engine.loaders import Checker, read_npz

    check = Checker(f"per-head data {path}", "re-run eval with per-head capture and --no-resume")
    data = read_npz(path, check)
    maps = {k[4:]: check.array(data[k], k, (3,), "f").astype(np.float64)
            for k in sorted(data) if k.startswith("map/")}
    ratios = {k[6:]: check.array(data[k], k, (1,), "f").astype(np.float64)
              for k in sorted(data) if k.startswith("ratio/")}
    if not maps or sorted(maps) != sorted(ratios):
        raise check.fail("does not hold one map/<site> and one ratio/<site> array per site")
    if any(maps[s].shape[0] != ratios[s].shape[0] for s in maps):
        raise check.fail("has a site whose map and ratio head counts differ")
    return maps, ratios


def _item_record(r: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``r`` when it has the entries head selection reads (class, track, a stem profile)."""
    check_item_record(r, folder / "items.jsonl")
    if "stem" not in r["profiles"]:
        raise EngineError(f"{folder / 'items.jsonl'} item {r['id'][:80]!r} has no stem profile: "
                          "re-run eval with --no-resume")
    return r


def _gt_mask(path: Path, gt: str, folder: Path) -> np.ndarray:
    """The ``gt_<gt>`` mask of one item's maps file (checked, read size-limited)."""
    from engine.loaders import Checker, read_npz

    m = read_npz(path, Checker(f"map file {path}", "re-run eval with --no-resume"))
    if f"gt_{gt}" not in m:
        raise EngineError(f"{folder} has no {gt!r} ground truth (it has "
                          f"{', '.join(f[3:] for f in m if f.startswith('gt_'))}): "
                          "choose one of those with --gt or re-run eval")
    return m[f"gt_{gt}"].astype(bool)


def label_free_scores(ratios: list[dict[str, np.ndarray]], lam: float = 1.0) -> dict[str, np.ndarray]:
    """``mean_r − λ·std_r`` (population std) of the runs' per-head log-ratios, per site."""
    sites = list(ratios[0])
    return {s: np.stack([r[s] for r in ratios]).mean(axis=0)
            - lam * np.stack([r[s] for r in ratios]).std(axis=0) for s in sites}


def split_tracks(tracks: list[str]) -> tuple[set[str], set[str], bool]:
    """``(selection, evaluation, in_sample)``: alternate sorted tracks; one track serves both."""
    ordered = sorted(set(tracks))
    if len(ordered) < 2:
        return set(ordered), set(ordered), True
    return set(ordered[0::2]), set(ordered[1::2]), False


def save_mask(mask: dict[str, list[bool]], path: Path) -> Path:
    path.write_text(json.dumps({s: [bool(v) for v in m] for s, m in mask.items()}, indent=1))
    return path


def _item_scores(m: np.ndarray, gt: np.ndarray, stem_profile: np.ndarray, tau: float) -> list[float]:
    return [tf_iou(m, gt, tau), average_precision(m, gt), profile_correlation(m, stem_profile)[0]]


@dataclass(frozen=True)
class HeadJob:
    """Per-item head-selection work on data the driver read (workers need no access to the folder).

    Items (:class:`LoadedItems`): ``("rank", record, maps, ratios, mask)`` → ``(log-ratios, oracle
    scores or None)``; ``("score", record, maps, ratios, mask, masks, orders)`` → ``(variant scores,
    weakening curves, base rate)``.
    """

    gt: str
    metric: str
    tau: float

    def setup(self) -> None:
        return None

    def run(self, state: None, item: tuple) -> tuple:
        kind, r, maps, ratios, mask = item[:5]
        if kind == "rank":
            oracle = oracle_head_scores(maps, mask, self.metric, self.tau) if mask.any() else None
            return ratios, oracle
        masks, orders = item[5:]
        stem = np.asarray(r["profiles"]["stem"])
        scores = {v: _item_scores(selective_map(maps, m), mask, stem, self.tau) for v, m in masks.items()}
        curves = ({name: ordered_weakening(maps, order, mask, self.metric, self.tau)[1]
                   for name, order in orders.items()} if mask.any() else {})
        return scores, curves, float(mask.mean())


class LoadedItems(Sequence):
    """``(kind, record, *rest)`` work items with the record's head maps, log-ratios and
    ground-truth mask read from ``folder`` when an item is taken (one at a time, not all at once)."""

    def __init__(self, folder: Path, gt: str, items: list[tuple]) -> None:
        self.folder, self.gt, self.items = folder, gt, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        kind, r, *rest = self.items[index]
        maps, ratios = load_head_data(self.folder / "heads" / f"{safe_name(r['id'])}.npz")
        mask = _gt_mask(self.folder / "maps" / f"{safe_name(r['id'])}.npz", self.gt, self.folder)
        return (kind, r, maps, ratios, mask, *rest)


def _fan_out(job: HeadJob, items: Sequence, cluster: ClusterSpec,
             progress: Callable[[int, int], None] | None) -> list[Any]:
    """The results of ``items`` in item order; an item's error ends the run (one line)."""
    results: list[Any] = [None] * len(items)
    for outcome in map_items(job, items, cluster, progress=progress):
        if outcome.error is not None:
            raise EngineError(outcome.error.removeprefix("EngineError: "))
        results[outcome.index] = outcome.result
    return results


def run_head_selection(out: str | Path, k: int | None = None, metric: str = "ap", gt: str = "region",
                       tau: float = 0.5, lam: float = 1.0, figures: bool = True,
                       order: list[str] | None = None, cluster: ClusterSpec | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rank heads per class, save top/bottom-k masks, compare variants, write weakening curves.

    Reads ``out/items.jsonl``, ``out/heads/*.npz`` and ``out/maps/*.npz`` (written by ``run_eval``
    with ``per_head=True``); writes ``out/heads/masks/*.json``, ``heads_comparison_<gt>.{csv,md}``,
    ``weakening_<gt>.{csv,md}`` and ``weakening_<gt>.png``. Returns a summary. A failed write
    (disk full, read-only folder) is one :class:`EngineError` line. ``order`` (item ids) fixes the
    order records are combined in (default: ``items.jsonl``'s); ``cluster`` where items are scored.
    """
    from engine.output_dir import os_error

    try:
        cluster = cluster or ClusterSpec()
        with cluster_session(cluster):  # one Ray instance for both passes
            return _head_selection(out, k, metric, gt, tau, lam, figures, order, cluster, progress)
    except OSError as exc:
        raise os_error(out, exc) from exc


def _head_selection(out: str | Path, k: int | None, metric: str, gt: str, tau: float, lam: float,
                    figures: bool, order: list[str] | None, cluster: ClusterSpec,
                    progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    folder = Path(out)
    records = in_order([_item_record(r, folder) for r in read_jsonl(folder / "items.jsonl")
                        if (folder / "heads" / f"{safe_name(r['id'])}.npz").is_file()], order)
    if not records:
        raise EngineError(f"no per-head data in {folder / 'heads'}: run eval with per-head capture")
    mask_dir = folder / "heads" / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    curves: dict[str, list[np.ndarray]] = {"label-free order": [], "ORACLE order": [],
                                           "reverse label-free order": []}
    weak_rows: list[list[Any]] = []
    summary: dict[str, Any] = {"classes": {}}
    job = HeadJob(gt, metric, tau)
    classes = {c: [r for r in records if r["class"] == c] for c in dict.fromkeys(r["class"] for r in records)}
    splits = {c: split_tracks([r["track"] for r in recs]) for c, recs in classes.items()}
    rank_items = [("rank", r) for c, recs in classes.items() for r in recs if r["track"] in splits[c][0]]
    score_recs = [r for c, recs in classes.items() for r in recs if r["track"] in splits[c][1]]
    total = len(rank_items) + len(score_recs)
    ranked = iter(_fan_out(job, LoadedItems(folder, gt, rank_items), cluster,
                           None if progress is None else lambda n, _: progress(n, total)))
    plans: dict[str, tuple[int, dict[str, Any], dict[str, list]]] = {}
    for c, recs in classes.items():
        sel, evl, in_sample = splits[c]
        sel_results = [next(ranked) for r in recs if r["track"] in sel]
        lf = label_free_scores([ratios for ratios, _ in sel_results], lam)
        per_item = [oracle for _, oracle in sel_results if oracle is not None]
        oracle = ({s: np.nanmean([o[s] for o in per_item], axis=0) for s in per_item[0]}
                  if per_item else None)
        n_heads = sum(v.size for v in lf.values())
        kk = k if k is not None else max(1, n_heads // 4)
        kk = min(kk, n_heads)
        masks = {"label-free top-k": select_heads(lf, kk, "top"),
                 "label-free bottom-k": select_heads(lf, kk, "bottom")}
        if oracle is not None and all(np.all(np.isfinite(v)) for v in oracle.values()):
            masks["ORACLE top-k"] = select_heads(oracle, kk, "top")
        files = {
            "label-free top-k": save_mask(masks["label-free top-k"], mask_dir / f"{c}_labelfree_top{kk}.json"),
            "label-free bottom-k": save_mask(masks["label-free bottom-k"],
                                             mask_dir / f"{c}_labelfree_bottom{kk}.json"),
        }
        if "ORACLE top-k" in masks:
            files["ORACLE top-k"] = save_mask(masks["ORACLE top-k"],
                                              mask_dir / f"{c}_ORACLE_{gt}_top{kk}.json")
        variants = {v: masks.get(v) for v in VARIANTS if v == VARIANTS[0] or v in masks}
        orders = {"label-free order": rank_heads(lf)}
        orders["reverse label-free order"] = orders["label-free order"][::-1]
        if "ORACLE top-k" in masks:
            orders["ORACLE order"] = rank_heads(oracle)
        plans[c] = (kk, variants, orders)
        summary["classes"][c] = {"k": kk, "heads": n_heads, "selection_tracks": sorted(sel),
                                 "evaluation_tracks": sorted(evl), "in_sample": in_sample,
                                 "masks": {v: str(p) for v, p in files.items()}}
    score_items = [("score", r, plans[r["class"]][1], plans[r["class"]][2]) for r in score_recs]
    scored = iter(_fan_out(job, LoadedItems(folder, gt, score_items), cluster, None if progress is None
                           else lambda n, _: progress(len(rank_items) + n, total)))
    for c, recs in classes.items():
        kk, variants, orders = plans[c]
        results = [next(scored) for r in recs if r["track"] in splits[c][1]]
        base = float(np.mean([b for _, _, b in results])) if results else float("nan")
        for variant in variants:
            vals = [scores[variant] for scores, _, _ in results]
            mean = [float(np.nanmean(col)) if np.any(np.isfinite(col)) else float("nan")
                    for col in np.array(vals, dtype=float).T]
            rows.append([c, variant, kk, len(results), *mean, base])
        for name in orders:
            ys = [curves_of[name] for _, curves_of, _ in results if curves_of]
            if not ys:
                continue
            curve = np.nanmean(np.stack(ys), axis=0)
            curves[name].append(curve)
            weak_rows += [[c, name, i, float(v)] for i, v in enumerate(curve)]
    write_table(folder, f"heads_comparison_{gt}",
                ["Instrument", "Heads kept", "k", "items", "IoU@tau", "AP", "Pearson (stem profile)",
                 "Base rate"],
                rows, f"Selective head aggregation ({gt} ground truth; ORACLE uses the labels; "
                      "AP of an uninformative map ≈ base rate)")
    write_table(folder, f"weakening_{gt}", ["Instrument", "order", "removed", metric], weak_rows,
                f"Ordered weakening ({metric}, {gt} ground truth)")
    if figures and any(curves.values()):
        from engine.evaluation.figures import weakening_figure

        mean_curves = {n: np.mean(np.stack(v), axis=0) for n, v in curves.items() if v}
        weakening_figure(mean_curves, folder / f"weakening_{gt}.png", metric)
    summary["gt"] = gt
    summary["comparison"] = [dict(zip(["class", "variant", "k", "items", "iou", "ap", "pearson",
                                       "base_rate"],
                                      r, strict=True)) for r in rows]
    return summary
