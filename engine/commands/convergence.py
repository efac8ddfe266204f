"""``convergence``: attention entropy per layer and step, freezing sweep, LSAC comparison."""

from __future__ import annotations

import argparse

from engine.commands.flags import (
    add_cluster,
    add_recipe,
    cluster_spec,
    int_list,
    recipe_kwargs,
    words,
)
from engine.commands.registry import Command, lazy, register


def _args(p: argparse.ArgumentParser) -> None:
    add_recipe(p)
    p.add_argument("--sites", default=None, help="all (default), self, cross, or comma-separated names/indices")
    p.add_argument("--late-fraction", type=float, default=0.5, help="share of the last transitions that count")
    p.add_argument("--quantile", type=float, default=0.5, help="stable below this quantile of late change")
    p.add_argument("--group", default="kind", choices=["kind", "all"], help="split self/cross or pool them")
    p.add_argument("--pads", default="include", choices=["include", "renormalise"],
                   help="padded keys: keep the raw distribution or renormalise over real tokens")
    p.add_argument("--sweep", action="store_true", help="also run the causal-freezing sweep (sites x freeze steps)")
    p.add_argument("--freeze-steps", default=None, help="comma-separated freeze steps of the sweep")
    p.add_argument("--compare", default=None,
                   help="'|'-separated prompts: compare LSAC presets with naive step reduction on them")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the comparison")
    p.add_argument("--presets", default="safe,balanced,aggressive", help="LSAC presets to compare")
    p.add_argument("--budget-mb", type=float, default=1024.0, help="memory budget of the LSAC cache")
    p.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
    add_cluster(p)  # with --sweep: one Ray work item per site x freeze step (docs/CLUSTER.md)


def _build(args: argparse.Namespace):
    from engine.convergence.command import ConvergenceOptions
    from engine.recipe import LIMITS, check_float, check_int

    seeds = int_list(args.seeds, "--seeds") or [0]
    for s in seeds:
        check_int("each of --seeds", s, 0, LIMITS.seed_max)
    check_float("--late-fraction", args.late_fraction, 0.0, 1.0, low_open=True)
    check_float("--quantile", args.quantile, 0.0, 1.0)
    check_float("--budget-mb", args.budget_mb, 0.0, LIMITS.memory_budget_max_mb, low_open=True)
    options = ConvergenceOptions(
        **recipe_kwargs(args), out=args.out, sites=args.sites, late_fraction=args.late_fraction,
        quantile=args.quantile, group=args.group, pads=args.pads, sweep=args.sweep,
        freeze_steps=int_list(args.freeze_steps, "--freeze-steps"), compare_prompts=words(args.compare, "|"),
        seeds=seeds, presets=words(args.presets), budget_mb=args.budget_mb, cluster=cluster_spec(args),
    )
    options.validate()
    return options


register(Command(
    name="convergence",
    summary="attention entropy per layer and step, stable/fast layers, freeze sweep, LSAC comparison",
    example="python main.py convergence --prompt 'bass and drums' --steps 25 --sweep --out conv/bass\n"
            "  python main.py convergence --prompt 'bass and drums' --steps 25 --sweep --ray local --workers 2 "
            "--out conv/bass2",
    outputs="OUT/convergence.{json,csv,png}, summary.json; with --sweep freeze_sweep.{npz,csv,png}; "
            "with --compare the LSAC comparison",
    add_arguments=_args, build=_build, execute=lazy("engine.convergence.command", "run_convergence"), unit="run",
))
