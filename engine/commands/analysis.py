"""``analyze`` and ``sites``: one generation with capture; the attention sites of a model."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.flags import add_model, add_recipe, parse_grid, recipe_kwargs, words
from engine.commands.registry import Command, lazy, register
from engine.recipe import LSAC_CACHE_DTYPES, LSAC_CHOICES, LsacSpec


def _analyze_args(p: argparse.ArgumentParser) -> None:
    add_recipe(p, negative=True)
    p.add_argument("--sites", default=None,
                   help="site names or indices (comma-separated), or self / cross; default: every cross-attention site")
    p.add_argument("--per-head", action="store_true", help="keep every head (default: the head mean)")
    p.add_argument("--grid", default="128x64", help="target time x mel grid, TIMExMEL")
    p.add_argument("--pooling", default="max", choices=["mean", "max"],
                   help="token pooling for the pooled map (mean over all keys is flat: rows sum to 1)")
    p.add_argument("--keywords", default=None, help="pool only these words (comma-separated), e.g. bass,drums")
    p.add_argument("--boundary", default="nearest", choices=["nearest", "zero", "reflect"],
                   help="edge handling of the bilinear resize")
    p.add_argument("--aggregator", default="mean", choices=["mean", "max", "topk"],
                   help="how maps combine over layers and steps")
    p.add_argument("--weighting", default="uniform", choices=["uniform", "sigma-late"],
                   help="step weights: uniform, or more weight on late (low-noise) steps")
    p.add_argument("--memory-budget-mb", type=float, default=2048.0,
                   help="memory for captured attention; over it the capture is reduced or streamed")
    p.add_argument("--stream-dir", default=None, help="stream frames to this folder when over budget")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--lsac", default="off", choices=list(LSAC_CHOICES),
                   help="layer-selective attention caching preset: caches the self-attention of converged layers")
    p.add_argument("--lsac-profile", default=None,
                   help="convergence.json from `main.py convergence` (default: profile this request first)")
    p.add_argument("--lsac-budget-mb", type=float, default=1024.0, help="memory budget of the LSAC cache")
    p.add_argument("--lsac-dtype", default="model", choices=list(LSAC_CACHE_DTYPES),
                   help="dtype of the LSAC cache (bfloat16: half the memory, faster cached products on CPU)")
    p.add_argument("--lsac-kinds", default="self", choices=["self", "self,cross"],
                   help="attention the preset caches")
    p.add_argument("--out", required=True, help="output folder (created; must not hold a previous run)")


def _analyze_build(args: argparse.Namespace):
    from engine.analyze import AnalyzeOptions

    lsac = None
    if args.lsac != "off":
        lsac = LsacSpec(preset=args.lsac, profile=args.lsac_profile, budget_mb=args.lsac_budget_mb,
                        dtype=args.lsac_dtype, kinds=tuple(words(args.lsac_kinds)))
    return AnalyzeOptions(
        **recipe_kwargs(args), out=args.out, sites=args.sites, per_head=args.per_head, grid=parse_grid(args.grid),
        pooling=args.pooling, keywords=tuple(words(args.keywords)) or None, boundary=args.boundary,
        aggregator=args.aggregator, weighting=args.weighting, memory_budget_mb=args.memory_budget_mb,
        stream_dir=args.stream_dir, figures=not args.no_figures, lsac=lsac,
    ).validate()


register(Command(
    name="analyze",
    summary="generate with attention capture and write audio, maps and figures",
    example="python main.py analyze --prompt 'bass and drums' --steps 25 --out runs/bass",
    outputs="OUT/audio.wav, run.json, attention.npz (aggregate, pooled, per-site and per-step maps), figures",
    add_arguments=_analyze_args, build=_analyze_build, execute=lazy("engine.analyze", "analyze"),
))


def _sites_args(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--prompt", default="bass and drums", help="prompt whose tokens are listed")
    p.add_argument("--duration", type=float, default=4.0, help="seconds (sets the query lattices shown)")


def _sites_build(args: argparse.Namespace):
    from engine.recipe import Recipe

    return Recipe(**recipe_kwargs(args)).validate()


def _sites_run(recipe, progress) -> list[str]:
    from engine.backends.registry import load_backend

    backend = load_backend(recipe.model, device=recipe.device)
    lines = [f"model: {backend.model_id} ({backend.family}); lattices (time x freq) for {recipe.duration:g} s"]
    planned: Any = getattr(backend, "planned_lattice", None)
    for site in backend.sites():
        lat = site.lattice or (planned(site.name, recipe.duration) if planned else None)
        lattice = "x".join(str(v) for v in lat) if lat else "-"
        lines.append(f"{site.index:3d}  {site.kind:5s}  {site.context:5s}  heads={site.heads:<3d} "
                     f"kv={site.kv_heads:<3d} lattice={lattice:8s} {site.name}")
    for context, toks in backend.tokens(recipe.prompt).items():
        lines.append(f"tokens[{context}]: {' | '.join(toks)}")
    return lines


register(Command(
    name="sites",
    summary="list the attention sites of a model and the prompt's tokens",
    example="python main.py sites --model tiny:audioldm2 --prompt 'bass and drums'",
    outputs="nothing (prints one line per site: index, kind, context, heads, lattice, name)",
    add_arguments=_sites_args, build=_sites_build, execute=_sites_run,
))
