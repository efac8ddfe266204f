"""LSAC against naive step reduction at matched attention compute (SAM-Audio probing Sec. 4.4).

Compute is counted in attention FLOPs from the measured call shapes of every site
(:class:`~engine.convergence.diagnostics.SiteShape`): per call ``2·B·Q·D_q·H·d`` (to_q),
``2·B·K·D_c·H_kv·d`` each for to_k / to_v, ``2·B·H·Q·K·d`` each for QKᵀ and probs @ V,
``5·B·H·Q·K`` for scale + mask + softmax, and ``2·B·Q·H·d·D_out`` (to_out). A cached call saves
to_q, to_k, QKᵀ and the softmax. A preset's saving is the fraction of the run's attention FLOPs
it skips; the naive baseline runs ``round(T · (1 − saving))`` steps, which saves the same
fraction of attention compute (the paper's compute-matched truncation).

Every condition is compared to the full ``T``-step run of the same prompt and seed
(:func:`engine.convergence.quality.deviation`); the pairs (LSAC, naive) over prompts × seeds
get a Wilcoxon signed-rank test and a paired t-test on the mel distance, with Cohen's d of the
differences.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.convergence.diagnostics import SiteShape
from engine.convergence.lsac import LSAC, plan_from_preset, plan_from_sweep, preset_named
from engine.convergence.quality import deviation
from engine.convergence.timing import AttentionTimer
from engine.types import EngineError, GenerationRequest


def call_flops(s: SiteShape) -> dict[str, float]:
    """FLOPs of one attention call: ``total`` and ``skipped`` when the call reuses its cache."""
    q_proj = 2.0 * s.batch * s.queries * s.d_query * s.heads * s.head_dim
    kv_proj = 2.0 * s.batch * s.keys * s.d_context * s.kv_heads * s.head_dim
    qk = 2.0 * s.batch * s.heads * s.queries * s.keys * s.head_dim
    softmax = 5.0 * s.batch * s.heads * s.queries * s.keys
    pv = qk
    out = 2.0 * s.batch * s.queries * s.heads * s.head_dim * s.d_out
    return {"total": q_proj + 2 * kv_proj + qk + softmax + pv + out,
            "skipped": q_proj + kv_proj + qk + softmax}


def attention_saving(plan: dict[str, int], shapes: dict[str, SiteShape], steps: int) -> float:
    """Fraction of the run's attention FLOPs (all sites, ``steps`` steps) that ``plan`` skips."""
    missing = [s for s in plan if s not in shapes]
    if missing:
        raise EngineError(f"no measured shape for site {missing[0]}: profile it with diagnose()")
    total = steps * sum(call_flops(s)["total"] for s in shapes.values())
    saved = sum(call_flops(shapes[s])["skipped"] * max(0, steps - 1 - t) for s, t in plan.items())
    return saved / total if total > 0 else 0.0


def matched_steps(steps: int, saving: float) -> int:
    """Steps of the naive run that saves the same attention fraction: ``round(T(1 − saving))``."""
    return max(1, int(round(steps * (1.0 - saving))))


def paired_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank and paired t-test of ``a`` vs ``b`` (same pairs), Cohen's d of ``a − b``."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a - b
    out = {"n": float(d.size), "mean_diff": float(d.mean()) if d.size else float("nan"),
           "wilcoxon_p": float("nan"), "ttest_p": float("nan"), "cohen_d": float("nan")}
    if d.size >= 2:
        sd = d.std(ddof=1)
        out["cohen_d"] = float(d.mean() / sd) if sd > 0 else float("nan")
        out["ttest_p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else float("nan")
        if np.any(d != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out


@dataclass
class Comparison:
    """Rows (one per prompt × seed × condition) and the paired summary per preset."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, dict[str, int]] = field(default_factory=dict)
    steps: int = 0


def compare_lsac(backend, report, prompts: list[str], seeds: list[int], base: GenerationRequest,
                 presets: tuple[str, ...] = ("safe", "balanced", "aggressive"),
                 budget_mb: float = 1024.0,
                 progress: Callable[[int, int], None] | None = None, sweep=None) -> Comparison:
    """Full run, each LSAC preset and its compute-matched naive run for every prompt × seed.
    With a freezing ``sweep`` the presets' plans come from it (``plan_from_sweep``)."""
    if not prompts or not seeds:
        raise EngineError("give at least one prompt and one seed to compare")
    steps = base.steps
    cmp = Comparison(steps=steps)
    matched: dict[str, tuple[float, int]] = {}
    for name in presets:
        plan = (plan_from_sweep(sweep, preset_named(name), steps) if sweep is not None
                else plan_from_preset(report, preset_named(name), steps))
        saving = attention_saving(plan, report.shapes, steps)
        cmp.plans[name] = plan
        matched[name] = (saving, matched_steps(steps, saving))
    total, done = len(prompts) * len(seeds) * (1 + 2 * len(presets)), 0

    def run(req: GenerationRequest, lsac: LSAC | None):
        nonlocal done
        timer = AttentionTimer()
        res = backend.generate(dataclasses.replace(req, interventions=(*([lsac] if lsac else []), timer)))
        done += 1
        if progress is not None:
            progress(done, total)
        return res, timer.total

    for prompt in prompts:
        for seed in seeds:
            req = dataclasses.replace(base, prompt=prompt, seed=seed, capture=True, sites=None,
                                      per_head=False, capture_steps=None)
            full, full_attn = run(req, None)
            cmp.rows.append({"prompt": prompt, "seed": seed, "condition": "full", "steps": steps,
                             "saving": 0.0, "elapsed_s": full.elapsed_s, "attention_s": full_attn,
                             **deviation(full, full)})
            for name in presets:
                saving, n_naive = matched[name]
                lsac = LSAC(cmp.plans[name], budget_mb, name=name)
                res, attn = run(req, lsac)
                cmp.rows.append({"prompt": prompt, "seed": seed, "condition": f"lsac-{name}",
                                 "steps": steps, "saving": saving, "elapsed_s": res.elapsed_s,
                                 "attention_s": attn, **deviation(res, full)})
                naive, attn = run(dataclasses.replace(req, steps=n_naive), None)
                cmp.rows.append({"prompt": prompt, "seed": seed, "condition": f"naive-{name}",
                                 "steps": n_naive, "saving": 1.0 - n_naive / steps,
                                 "elapsed_s": naive.elapsed_s, "attention_s": attn,
                                 **deviation(naive, full)})
    for name in presets:
        cmp.summary[name] = summarise(cmp.rows, name)
    return cmp


def summarise(rows: list[dict[str, Any]], preset: str) -> dict[str, Any]:
    """Means per condition and paired statistics of LSAC vs naive (mel distance) for a preset."""
    def pick(cond: str) -> list[dict[str, Any]]:
        return sorted((r for r in rows if r["condition"] == cond), key=lambda r: (r["prompt"], r["seed"]))

    lsac, naive, full = pick(f"lsac-{preset}"), pick(f"naive-{preset}"), pick("full")
    out: dict[str, Any] = {"pairs": len(lsac)}
    for label, group in (("lsac", lsac), ("naive", naive)):
        for key in ("mel_distance", "wave_distance", "iou", "ap", "pearson", "attention_s", "elapsed_s"):
            out[f"{label}_{key}"] = float(np.mean([r[key] for r in group]))
        out[f"{label}_saving"] = float(np.mean([r["saving"] for r in group]))
        out[f"{label}_steps"] = int(group[0]["steps"])
    out["full_attention_s"] = float(np.mean([r["attention_s"] for r in full]))
    out["full_elapsed_s"] = float(np.mean([r["elapsed_s"] for r in full]))
    out["lsac_attention_speedup"] = out["full_attention_s"] / max(out["lsac_attention_s"], 1e-12)
    out["mel_distance_test"] = paired_stats([r["mel_distance"] for r in lsac],
                                            [r["mel_distance"] for r in naive])
    return out


def write_comparison(cmp: Comparison, folder: str | Path) -> list[Path]:
    """``lsac_compare.csv`` (rows), ``lsac_compare.json`` (summary, plans) and ``lsac_compare.md``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "lsac_compare.csv"
    keys = list(cmp.rows[0]) if cmp.rows else []
    with table.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(cmp.rows)
    summary = folder / "lsac_compare.json"
    summary.write_text(json.dumps({"steps": cmp.steps, "plans": cmp.plans, "summary": cmp.summary},
                                  indent=1, default=float))
    md = folder / "lsac_compare.md"
    md.write_text(markdown_table(cmp))
    return [table, summary, md]


def markdown_table(cmp: Comparison) -> str:
    """The quality–speed trade-off as a Markdown table (means over prompts × seeds)."""
    lines = ["| condition | steps | attention FLOPs saved | mel distance | waveform distance | "
             "map IoU | attention time (s) | p (Wilcoxon / t, vs naive) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in cmp.summary.items():
        t = s["mel_distance_test"]
        for label in ("lsac", "naive"):
            p = f"{t['wilcoxon_p']:.3g} / {t['ttest_p']:.3g}" if label == "lsac" else ""
            lines.append(f"| {label}-{name} | {s[f'{label}_steps']} | {100 * s[f'{label}_saving']:.1f} % | "
                         f"{s[f'{label}_mel_distance']:.4g} | {s[f'{label}_wave_distance']:.4g} | "
                         f"{s[f'{label}_iou']:.3f} | {s[f'{label}_attention_s']:.3f} | {p} |")
    return "\n".join(lines) + "\n"
