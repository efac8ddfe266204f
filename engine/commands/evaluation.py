"""``eval`` (the AIBA evaluation) and ``head-select`` (selective head aggregation)."""

from __future__ import annotations

import argparse

from engine.commands.flags import (
    add_cluster,
    add_recipe,
    cluster_spec,
    parse_grid,
    recipe_kwargs,
    words,
)
from engine.commands.registry import Command, lazy, register


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="a Slakh2100(-format) folder (split folders or tracks)")
    p.add_argument("--out", required=True, help="results folder (resumed when it exists)")
    add_recipe(p, prompt=False)
    p.add_argument("--classes", default=None, help="comma-separated, default Bass,Drums,Guitar,Piano,Strings,Organ")
    p.add_argument("--templates", default=None, help="YAML prompt templates per class (default: the shipped ones)")
    p.add_argument("--seed-mode", default="per_track", choices=["per_track", "fixed"],
                   help="per_track: seed + track number; fixed: --seed for every item")
    p.add_argument("--offset", type=float, default=0.0, help="start of the stem window, or of its search (s)")
    p.add_argument("--window", default="active", choices=["active", "fixed"],
                   help="active: first window from --offset where the class sounds; fixed: --offset")
    p.add_argument("--min-active", type=float, default=0.25,
                   help="share of the window in which the class must sound (else the item is refused)")
    p.add_argument("--gt-range", default="region", choices=["region", "fundamental", "band"],
                   help="headline knowledge-driven ground truth (band covers most of the grid)")
    p.add_argument("--grid", default="128x64", help="time x mel grid of maps and ground truth, TIMExMEL")
    p.add_argument("--max-tracks", type=int, default=None, help="evaluate at most this many tracks")
    p.add_argument("--split", default=None, help="train, validation or test (Slakh layout)")
    p.add_argument("--all-sites", action="store_true", help="self-attention too (ablation)")
    p.add_argument("--pooling", default="keyword", choices=["keyword", "mean", "max", "weighted"],
                   help="token pooling: the class word (keyword), or over all tokens")
    p.add_argument("--beta", type=float, default=4.0, help="temperature of weighted pooling")
    p.add_argument("--aggregator", default="mean", choices=["mean", "max", "topk"],
                   help="how maps combine over layers and steps")
    p.add_argument("--topk", type=int, default=3, help="layers kept by the topk aggregator")
    p.add_argument("--weighting", default="uniform", choices=["uniform", "sigma_late", "sigma-late", "learned"],
                   help="step/layer weights: uniform, late steps, or learned on held-out tracks")
    p.add_argument("--alpha", type=float, default=1.0, help="sigma-late rate")
    p.add_argument("--fit-split", default=None, help="learned weighting: fit on this split")
    p.add_argument("--fit-tracks", type=int, default=4, help="learned weighting without --fit-split: first N tracks")
    p.add_argument("--fit-target", default=None, choices=["region", "fundamental", "band", "stem", "output"],
                   help="ground truth the layer weights are fitted to (default: --gt-range)")
    p.add_argument("--tau", type=float, default=0.5, help="binarisation threshold of maps, 0..1")
    p.add_argument("--threshold-db", type=float, default=-30.0, help="stem activity threshold (dB below peak)")
    p.add_argument("--min-share", type=float, default=0.1, help="share of a band's energy that marks it active")
    p.add_argument("--no-per-head", action="store_true", help="head-mean capture (no head selection)")
    p.add_argument("--head-k", type=int, default=None, help="also run head selection with this k")
    p.add_argument("--head-metric", default="ap", choices=["ap", "iou"], help="metric head selection ranks by")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming --out")
    p.add_argument("--memory-budget-mb", type=float, default=4096.0, help="memory for captured attention per item")
    p.add_argument("--no-figures", action="store_true", help="skip Figures 2 and 3")
    add_cluster(p)


def _eval_build(args: argparse.Namespace):
    from engine.evaluation import EvalOptions

    options = EvalOptions(
        **recipe_kwargs(args), dataset=args.dataset, out=args.out, classes=words(args.classes) or None,
        templates=args.templates, seed_mode=args.seed_mode, offset=args.offset, grid=parse_grid(args.grid),
        window=args.window, min_active=args.min_active, gt_range=args.gt_range, max_tracks=args.max_tracks,
        split=args.split, cross_only=not args.all_sites, pooling=args.pooling, aggregator=args.aggregator,
        topk=args.topk, weighting=args.weighting.replace("-", "_"), alpha=args.alpha, beta=args.beta,
        tau=args.tau, per_head=not args.no_per_head, resume=not args.no_resume, fit_split=args.fit_split,
        fit_tracks=args.fit_tracks, fit_target=args.fit_target, head_k=args.head_k, head_metric=args.head_metric,
        threshold_db=args.threshold_db, min_share=args.min_share, memory_budget_mb=args.memory_budget_mb,
        figures=not args.no_figures, cluster=cluster_spec(args),
    )
    options.validate(require_prompt=False)
    return options


register(Command(
    name="eval",
    summary="AIBA evaluation: generate per track and instrument, score attention against ground truth",
    example="python main.py eval --dataset slakh2100_flac_redux --split test --max-tracks 30 --out eval/v2",
    outputs="OUT/items.jsonl, errors.jsonl, Tables 1 and 3 (CSV, Markdown), Figures 2 and 3; resumable",
    add_arguments=_eval_args, build=_eval_build, execute=lazy("engine.evaluation.runner", "run_eval"), unit="item",
))


def _heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="an eval results folder (run with per-head capture)")
    p.add_argument("--k", type=int, default=None, help="heads kept (default: a quarter of all heads)")
    p.add_argument("--metric", default="ap", choices=["ap", "iou"], help="metric the heads are ranked by")
    p.add_argument("--gt", default="region", choices=["region", "fundamental", "band", "stem", "output"],
                   help="ground truth of the comparison")
    p.add_argument("--tau", type=float, default=0.5, help="binarisation threshold, 0..1")
    p.add_argument("--lam", type=float, default=1.0, help="consistency penalty of the label-free score")
    p.add_argument("--no-figures", action="store_true", help="skip the weakening-curve figure")
    add_cluster(p)


def _heads_build(args: argparse.Namespace) -> argparse.Namespace:
    from engine.recipe import LIMITS, check_float, check_int

    if args.k is not None:
        check_int("--k", args.k, 1, LIMITS.steps_max * 100)
    check_float("--tau", args.tau, 0.0, 1.0, low_open=True)
    check_float("--lam", args.lam, 0.0, 1e6)
    args.cluster = cluster_spec(args)
    return args


def _heads_run(args: argparse.Namespace, progress) -> str:
    from engine.evaluation import run_head_selection

    summary = run_head_selection(args.out, k=args.k, metric=args.metric, gt=args.gt, tau=args.tau,
                                 lam=args.lam, figures=not args.no_figures, cluster=args.cluster,
                                 progress=progress)
    return f"{args.out} (head masks and comparison, {len(summary)} entries)"


register(Command(
    name="head-select",
    summary="rank heads per concept on an eval folder; compare all / top-k / bottom-k",
    example="python main.py head-select --out eval/v2 --k 7",
    outputs="OUT/heads/: head masks per class (JSON), comparison table, weakening curve",
    add_arguments=_heads_args, build=_heads_build, execute=_heads_run, unit="item",
))
