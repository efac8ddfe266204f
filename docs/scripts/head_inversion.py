"""Why the label-free head ranking inverts (docs/RESULTS.md): per-head statistics of an eval folder.

    python docs/scripts/head_inversion.py stats EVAL_DIR [GT]      # ρ(log-ratio, mass / CV / AP) per class
    python docs/scripts/head_inversion.py contrast EVAL_DIR [GT]   # split-half: contrast-ranked top-7 vs the others
    python docs/scripts/head_inversion.py shares ANALYZE_DIR WORD  # <bos> / concept shares of one per-head run

EVAL_DIR is an ``eval`` output with per-head capture (``heads/*.npz``); ANALYZE_DIR an
``analyze --per-head`` output. Prints JSON. Analysis only: not part of the engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from engine.analysis.heads import select_heads, selective_map
from engine.analysis.metrics import average_precision
from engine.evaluation.head_selection import (
    _gt_mask,
    label_free_scores,
    load_head_data,
    split_tracks,
)
from engine.evaluation.tables import read_jsonl, safe_name


def _cv(m: np.ndarray) -> np.ndarray:
    flat = m.reshape(m.shape[0], -1)
    return flat.std(1) / (flat.mean(1) + 1e-12)


def _items(folder: Path, gt: str):
    recs = [r for r in read_jsonl(folder / "items.jsonl")
            if (folder / "heads" / f"{safe_name(r['id'])}.npz").is_file()]
    for c in dict.fromkeys(r["class"] for r in recs):
        data = []
        for r in (r for r in recs if r["class"] == c):
            maps, ratios = load_head_data(folder / "heads" / f"{safe_name(r['id'])}.npz")
            mask = _gt_mask(folder / "maps" / f"{safe_name(r['id'])}.npz", gt, folder)
            data.append((r, maps, ratios, mask))
        yield c, data


def stats(folder: Path, gt: str) -> dict:
    out = {}
    for c, data in _items(folder, gt):
        rows = []
        for _, maps, ratios, mask in data:
            if not mask.any():
                continue
            m = np.concatenate([maps[s] for s in sorted(maps)])
            rows.append({"ratio": np.concatenate([ratios[s] for s in sorted(maps)]),
                         "ap": np.array([average_precision(h, mask) for h in m]),
                         "mass": m.mean(axis=(1, 2)), "cv": _cv(m)})
        agg = {k: np.mean([r[k] for r in rows], axis=0) for k in rows[0]}
        order = np.argsort(-agg["ratio"])
        out[c] = {"items": len(rows),
                  **{f"rho(ratio,{k})": float(spearmanr(agg["ratio"], agg[k])[0]) for k in ("mass", "cv", "ap")},
                  "rho(cv,ap)": float(spearmanr(agg["cv"], agg["ap"])[0]),
                  **{f"{name} {k}": float(agg[k][idx].mean()) for name, idx in
                     (("top7", order[:7]), ("all", order), ("bottom7", order[-7:])) for k in ("cv", "ap")}}
    return out


def contrast(folder: Path, gt: str, k: int = 7) -> dict:
    res = {}
    for c, data in _items(folder, gt):
        sel, evl, _ = split_tracks([d[0]["track"] for d in data])
        s_items = [d for d in data if d[0]["track"] in sel]
        e_items = [d for d in data if d[0]["track"] in evl and d[3].any()]
        lf = label_free_scores([d[2] for d in s_items])
        cv = {s: np.mean([_cv(d[1][s]) for d in s_items], axis=0) for s in lf}

        def ap(mask, e_items=e_items):
            return float(np.mean([average_precision(selective_map(d[1], mask), d[3]) for d in e_items]))

        res[c] = {"all": ap(None), "ratio top7": ap(select_heads(lf, k, "top")),
                  "ratio bottom7": ap(select_heads(lf, k, "bottom")), "contrast top7": ap(select_heads(cv, k, "top")),
                  "base": float(np.mean([d[3].mean() for d in e_items]))}
    keys = next(iter(res.values())).keys()
    return {"classes": res, "mean": {key: float(np.mean([v[key] for v in res.values()])) for key in keys}}


def shares(folder: Path, word: str) -> dict:
    z = np.load(folder / "attention.npz", allow_pickle=False)
    tokens = [str(t) for t in z["tokens"]]
    ci = tokens.index(word)
    per_site: dict[str, list[np.ndarray]] = {}
    for key in z.files:
        if key.startswith("frame/") and "attn2" in key:
            per_site.setdefault(key.split("/", 2)[2], []).append(z[key].astype(np.float64))
    bos, conc, ratio, cv = [], [], [], []
    for _, frames in sorted(per_site.items()):
        a = np.mean(frames, axis=0)  # (H, Q, K), mean over steps
        pk = a.mean(axis=1)
        other = [j for j in range(a.shape[2]) if j != ci]
        bos += list(pk[:, 0])
        conc += list(pk[:, ci])
        ratio += list(np.log(pk[:, ci] + 1e-12) - np.log(pk[:, other].mean(1) + 1e-12))
        cv += list(a[:, :, ci].std(1) / (a[:, :, ci].mean(1) + 1e-12))
    bos, conc, ratio, cv = map(np.array, (bos, conc, ratio, cv))
    o = np.argsort(-ratio)
    return {"tokens": tokens, "rho(bos,concept)": float(spearmanr(bos, conc)[0]),
            **{f"{n} {k}": float(v[idx].mean()) for n, idx in (("top7", o[:7]), ("bottom7", o[-7:]))
               for k, v in (("bos", bos), ("concept", conc), ("cv", cv))}}


if __name__ == "__main__":
    cmd, folder = sys.argv[1], Path(sys.argv[2])
    arg = sys.argv[3] if len(sys.argv) > 3 else "stem"
    result = {"stats": stats, "contrast": contrast, "shares": shares}[cmd](folder, arg)
    print(json.dumps(result, indent=1))
