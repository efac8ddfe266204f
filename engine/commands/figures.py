"""``figure``: a publication figure (PNG, SVG, PDF) of a saved ``analyze`` run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from engine.commands.registry import Command, lazy, register

VIEWS = ("heatmap", "layers", "overview", "profiles", "steps")


@dataclass(frozen=True)
class FigureOptions:
    """The run folder, the output file and what to draw."""

    run_dir: str
    out: str
    spec: Any  # engine.publication.FigureSpec


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `main.py analyze`")
    p.add_argument("--view", default="heatmap", choices=list(VIEWS),
                   help="heatmap: one map; layers: one panel per site; overview: site x step grid; "
                        "profiles: frequency profile per token; steps: one panel per step")
    p.add_argument("--site", default=None, help="one site: its full name, a unique part of it, or its index")
    p.add_argument("--step", type=int, default=None, help="one recorded step, 0-based (default: all steps)")
    p.add_argument("--token", default=None, help="one prompt token (word or index; default: all tokens pooled)")
    p.add_argument("--head", type=int, default=None, help="one head of --site (needs the raw frames; default: head mean)")
    p.add_argument("--out", required=True, help="output file ending in .png, .svg or .pdf")
    p.add_argument("--dpi", type=int, default=150, help="dots per inch, 30..1200")
    p.add_argument("--size", default="6.4x4", help="figure size WxH in inches, e.g. 6.4x4")
    p.add_argument("--cmap", default="magma", choices=["magma", "viridis", "inferno", "plasma", "cividis", "gray"],
                   help="colour map")


def _build(args: argparse.Namespace) -> FigureOptions:
    from pathlib import Path

    from engine.publication import FigureSpec, check_out, parse_size
    from engine.recipe import check_int

    check_int("--dpi", args.dpi, 30, 1200)
    if args.step is not None:
        check_int("--step", args.step, 0, 1_000_000)
    if args.head is not None:
        check_int("--head", args.head, 0, 100_000)
    size = parse_size(args.size)
    check_out(Path(args.out))
    spec = FigureSpec(view=args.view, site=args.site, step=args.step, token=args.token, head=args.head,
                      size=size, dpi=args.dpi, cmap=args.cmap)
    return FigureOptions(run_dir=args.run_dir, out=args.out, spec=spec)


register(Command(
    name="figure",
    summary="render a publication figure (heatmap, layers, overview, profiles, steps) of a saved run",
    example="python main.py figure runs/bass --view heatmap --token bass --out bass.pdf",
    outputs="OUT (one .png, .svg or .pdf figure)",
    add_arguments=_args, build=_build, execute=lazy("engine.publication", "figure_command"), unit="figure",
))
