"""Tables of the evaluation, computed from the per-item records of ``items.jsonl`` alone.

* Table 1 (AIBA layout): rows Precision / Recall / F1 / IoU, columns Micro / Macro / Posweighted.
* Table 3 (AIBA layout): one row per class plus ``Macro-avg``, columns Precision / Recall / F1 / IoU.
* Profile table: per class, the mean over items of IoU@τ, swept IoU, AP, pointing game and the
  Pearson / Spearman profile correlations (``nan`` values are left out of the mean).

Counting: every item stores the confusion counts of its binarised map against each ground truth.
A class's scores come from the counts pooled over its items (as if their masks were concatenated);
``micro`` pools the counts over all classes; ``macro`` is the unweighted mean of the class scores;
``posweighted`` weights each class by its number of positive ground-truth cells (TP + FN). This is
:func:`engine.analysis.metrics.class_table` on counts.

Chance correction: every table also gives the **base rate** (share of positive ground-truth cells,
(TP + FN) / all cells) and the **precision lift** (precision / base rate). A map without any
information (random, or all cells on) has precision ≈ base rate, lift ≈ 1, and AP ≈ base rate;
so the profile table gives ``AP − base`` per item. Precision or AP near 1 with a base rate near 1
says nothing about alignment.

Left out: an item whose confusion counts for a ground truth are ``null`` (a time-only map against
a frequency-only ground truth, see :mod:`engine.evaluation.scoring`) is not in that ground truth's
tables; the profile table's ``items`` column counts the items that were scored. When no item was
scored against a ground truth, its ``table1_*.md`` says why and no CSV is written.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.analysis.metrics import Counts, scores_from_counts
from engine.types import EngineError

METRICS = ("precision", "recall", "f1", "iou")
PROFILE_METRICS = ("iou", "iou_sweep_mean", "ap", "pointing", "pearson", "spearman")
AVERAGES = ("micro", "macro", "posweighted")
CHANCE = ("base_rate", "precision_lift")


def in_order(records: list[dict[str, Any]], order: Sequence[str] | None) -> list[dict[str, Any]]:
    """``records`` sorted by the position of their id in ``order`` (stable; unknown ids last), so
    tables do not depend on the order items were appended in (resumed or distributed runs)."""
    if order is None:
        return records
    position = {item_id: n for n, item_id in enumerate(order)}
    return sorted(records, key=lambda r: position.get(r["id"], len(position)))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (interrupted write) is ignored."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            if i == len(lines) - 1:
                break
            raise EngineError(f"{p} line {i + 1} is not JSON ({exc}): repair or delete the line") from exc
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise EngineError(f"{p} line {i + 1} is not a record with a text id: repair or delete the line")
        out.append(record)
    return out


def check_item_record(record: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """``record`` (one line of ``items.jsonl``) when the entries the tables, figures and head
    selection read have their types: text id/class/track/prompt, ``scores`` a table of tables (or
    null) of numbers, true/false or null, ``profiles`` a table of equally long number lists."""
    from engine.loaders import Checker

    check = Checker(f"{source} item {str(record.get('id'))[:80]!r}", "repair or delete the line, or re-run with --no-resume")
    for name in ("id", "class", "track", "prompt"):
        check.text(check.key(record, name), name, 10_000)
    for gt, entry in check.table(check.key(record, "scores"), "scores").items():
        if entry is not None and not all(v is None or isinstance(v, (int, float))
                                         for v in check.table(entry, f"{gt} scores").values()):
            raise check.fail(f"has {gt} scores that are not numbers")
    lengths = set()
    for name, values in check.table(check.key(record, "profiles"), "profiles").items():
        values = check.items(values, f"{name} profile", 100_000)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise check.fail(f"has a {name} profile that is not a list of numbers")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise check.fail(f"has profiles of different lengths {sorted(lengths)}")
    return record


def scored(item: dict[str, Any], gt: str) -> bool:
    """Whether the item has confusion counts for ``gt`` (not left out as undefined)."""
    s = item["scores"].get(gt)
    return s is not None and s.get("tp") is not None


def class_counts(items: Iterable[dict[str, Any]], gt: str) -> dict[str, Counts]:
    """Counts pooled per class for ground-truth kind ``gt``, classes in first-seen order.

    Items without counts for ``gt`` (see :func:`scored`) are left out."""
    pooled: dict[str, list[int]] = {}
    for it in items:
        if not scored(it, gt):
            continue
        s = it["scores"][gt]
        acc = pooled.setdefault(it["class"], [0, 0, 0, 0])
        for j, f in enumerate(("tp", "fp", "fn", "tn")):
            acc[j] += int(s[f])
    return {c: Counts(*v) for c, v in pooled.items()}


def count_table(counts: dict[str, Counts], zero_division: float = 0.0) -> dict[str, dict[str, float]]:
    """Per-class and micro / macro / positive-weighted precision, recall, F1, IoU from counts."""
    if not counts:
        raise EngineError("no scored items: nothing to tabulate")
    table = {c: {**scores_from_counts(k, zero_division), **chance_scores(k)} for c, k in counts.items()}
    total = Counts(*(sum(getattr(k, f) for k in counts.values()) for f in ("tp", "fp", "fn", "tn")))
    table["micro"] = {**scores_from_counts(total, zero_division), **chance_scores(total)}
    classes = list(counts)
    cols = (*METRICS, *CHANCE)
    table["macro"] = {m: float(np.mean([table[c][m] for c in classes])) for m in cols}
    support = np.array([counts[c].tp + counts[c].fn for c in classes], dtype=np.float64)
    table["posweighted"] = (
        {m: float("nan") for m in cols} if support.sum() == 0 else
        {m: float(np.dot(support, [table[c][m] for c in classes]) / support.sum()) for m in cols}
    )
    return table


def chance_scores(k: Counts) -> dict[str, float]:
    """Base rate (TP + FN) / all cells and precision lift = precision / base rate (nan if undefined)."""
    n = k.tp + k.fp + k.fn + k.tn
    base = (k.tp + k.fn) / n if n else float("nan")
    precision = k.tp / (k.tp + k.fp) if k.tp + k.fp else float("nan")
    lift = precision / base if n and base > 0 and not math.isnan(precision) else float("nan")
    return {"base_rate": float(base), "precision_lift": float(lift)}


def table1_rows(table: dict[str, dict[str, float]]) -> list[list[Any]]:
    """AIBA Table 1: metric rows × (Micro, Macro, Posweighted)."""
    names = {"precision": "Precision", "recall": "Recall", "f1": "F1", "iou": "IoU",
             "base_rate": "Base rate", "precision_lift": "Precision lift"}
    return [[names[m], *(table[a][m] for a in AVERAGES)] for m in (*METRICS, *CHANCE)]


def table3_rows(table: dict[str, dict[str, float]], classes: Sequence[str]) -> list[list[Any]]:
    """AIBA Table 3: class rows (then Macro-avg) × (Precision, Recall, F1, IoU, base rate, lift)."""
    cols = (*METRICS, *CHANCE)
    rows = [[c, *(table[c][m] for m in cols)] for c in classes]
    rows.append(["Macro-avg", *(table["macro"][m] for m in cols)])
    return rows


def item_base_rate(score: dict[str, Any]) -> float:
    """Share of positive ground-truth cells of one item, from its stored confusion counts."""
    n = score["tp"] + score["fp"] + score["fn"] + score["tn"]
    return (score["tp"] + score["fn"]) / n if n else float("nan")


def profile_rows(items: Sequence[dict[str, Any]], gt: str, classes: Sequence[str]) -> list[list[Any]]:
    """Per class (then ``all``): items, the nan-skipping mean of each profile metric, the mean base
    rate and the mean of ``AP − base rate`` (the chance-corrected AP)."""
    rows = []
    for c in [*classes, "all"]:
        chosen = [it for it in items if (c == "all" or it["class"] == c) and scored(it, gt)]
        vals = []
        for m in PROFILE_METRICS:
            xs = [it["scores"][gt][m] for it in chosen if it["scores"][gt].get(m) is not None]
            vals.append(float(np.mean(xs)) if xs else float("nan"))
        base = [item_base_rate(it["scores"][gt]) for it in chosen]
        gain = [it["scores"][gt]["ap"] - b for it, b in zip(chosen, base, strict=True)
                if it["scores"][gt].get("ap") is not None]
        vals += [float(np.nanmean(base)) if base else float("nan"),
                 float(np.mean(gain)) if gain else float("nan")]
        rows.append([c, len(chosen), *vals])
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def write_table(folder: Path, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                title: str = "") -> tuple[Path, Path]:
    """Write ``name.csv`` (full precision) and ``name.md`` (3 decimals) and return both paths."""
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([repr(v) if isinstance(v, float) else v for v in r])
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def write_tables(folder: Path, items: Sequence[dict[str, Any]], gts: Sequence[str],
                 tau: float) -> dict[str, dict[str, dict[str, float]]]:
    """Tables 1 and 3 and the profile table for every ground-truth kind; returns the count tables."""
    if not items:
        raise EngineError("no item was scored: check the dataset and the errors report")
    out = {}
    for gt in gts:
        usable = [it for it in items if scored(it, gt)]
        if not usable:
            for stale in (f"table1_{gt}", f"table3_{gt}", f"profiles_{gt}"):
                for ext in (".csv", ".md"):
                    (folder / f"{stale}{ext}").unlink(missing_ok=True)
            n_time = sum(1 for it in items if it["scores"].get(gt, {}).get("time_only"))
            (folder / f"table1_{gt}.md").write_text(
                f"**Table 1 ({gt} ground truth)**\n\nNo table: none of the {len(items)} items was "
                f"scored against `{gt}` ({n_time} have time-only maps, flat in frequency, which "
                "carry no frequency information; see docs/EVALUATION.md).\n", encoding="utf-8")
            continue
        classes = list(dict.fromkeys(it["class"] for it in usable))
        table = count_table(class_counts(usable, gt))
        out[gt] = table
        write_table(folder, f"table1_{gt}", ["Metric", "Micro", "Macro", "Posweighted"],
                    table1_rows(table), f"Table 1 ({gt} ground truth, τ = {tau}, {len(usable)} items)")
        write_table(folder, f"table3_{gt}",
                    ["Instrument", "Precision", "Recall", "F1", "IoU", "Base rate", "Precision lift"],
                    table3_rows(table, classes), f"Table 3 ({gt} ground truth, τ = {tau})")
        write_table(folder, f"profiles_{gt}",
                    ["Instrument", "items", "IoU@tau", "IoU swept", "AP", "pointing", "Pearson", "Spearman",
                     "Base rate", "AP - base"],
                    profile_rows(usable, gt, classes), f"Profile and ranking metrics ({gt} ground truth)")
    return out


def safe_name(item_id: str) -> str:
    """An item id as a file name (``maps/<name>.npz``, ``heads/<name>.npz``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", item_id)
