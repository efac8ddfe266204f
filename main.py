"""AIBA Studio entry point.

``python main.py`` opens the workstation GUI; ``python main.py <command>`` runs headless.
Every capability of the GUI is reachable here so it can be scripted, tested and batched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str):
    """Register a sub-command: the decorated function adds its arguments to a parser."""

    def wrap(func: Callable[[argparse.ArgumentParser], None]):
        COMMANDS[name] = (help_text, func)
        return func

    return wrap


@command("analyze", "generate with attention capture and write audio, maps and figures")
def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text prompt")
    p.add_argument("--negative-prompt", default="", help="negative prompt (CFG)")
    p.add_argument("--model", default="embedded", help="'embedded', a hub id or a local folder")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=4.0, help="seconds of audio")
    p.add_argument("--sites", default=None, help="comma-separated site names or indices (default: all cross)")
    p.add_argument("--per-head", action="store_true", help="keep every head (default: head-mean)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--grid", default="128x64", help="target time x mel grid, e.g. 128x64")
    p.add_argument("--pooling", default="max", choices=["mean", "max"],
                   help="token pooling for the pooled map (mean over all keys is flat: rows sum to 1)")
    p.add_argument("--keywords", default=None, help="pool only these words (comma-separated), e.g. bass,drums")
    p.add_argument("--boundary", default="nearest", choices=["nearest", "zero", "reflect"],
                   help="edge handling of the bilinear resize")
    p.add_argument("--aggregator", default="mean", choices=["mean", "max", "topk"])
    p.add_argument("--weighting", default="uniform", choices=["uniform", "sigma-late"])
    p.add_argument("--memory-budget-mb", type=float, default=2048.0)
    p.add_argument("--stream-dir", default=None, help="stream frames to this folder when over budget")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--lsac", default="off", choices=["off", "safe", "balanced", "aggressive"],
                   help="layer-selective attention caching preset: caches the self-attention of converged layers (default off)")
    p.add_argument("--lsac-profile", default=None,
                   help="convergence.json from `main.py convergence` (default: profile this request first)")
    p.add_argument("--lsac-budget-mb", type=float, default=1024.0, help="memory budget of the LSAC cache")
    p.add_argument("--lsac-dtype", default="model", choices=["model", "bfloat16", "float16", "float32"],
                   help="dtype of the LSAC cache (bfloat16: half the memory, faster cached products on CPU)")
    p.add_argument("--lsac-kinds", default="self", choices=["self", "self,cross"],
                   help="attention the preset caches: self (default) or self,cross")
    p.add_argument("--out", required=True, help="output folder (created; must not hold a previous run)")


@command("eval", "AIBA evaluation: generate per track and instrument, score attention against ground truth")
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="a Slakh2100(-format) folder")
    p.add_argument("--out", required=True, help="results folder (resumed when it exists)")
    p.add_argument("--model", default="embedded")
    p.add_argument("--classes", default=None, help="comma-separated, default Bass,Drums,Guitar,Piano,Strings,Organ")
    p.add_argument("--templates", default=None, help="YAML prompt templates per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-mode", default="per_track", choices=["per_track", "fixed"])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--offset", type=float, default=0.0, help="start of the stem window, or of its search (s)")
    p.add_argument("--window", default="active", choices=["active", "fixed"],
                   help="active: first window from --offset where the class sounds; fixed: --offset")
    p.add_argument("--min-active", type=float, default=0.25,
                   help="share of the window in which the class must sound (else the item is refused)")
    p.add_argument("--gt-range", default="region", choices=["region", "fundamental", "band"],
                   help="headline knowledge-driven ground truth (band covers most of the grid)")
    p.add_argument("--grid", default="128x64")
    p.add_argument("--max-tracks", type=int, default=None)
    p.add_argument("--split", default=None, help="train, validation or test (Slakh layout)")
    p.add_argument("--all-sites", action="store_true", help="self-attention too (ablation)")
    p.add_argument("--pooling", default="keyword", choices=["keyword", "mean", "max", "weighted"])
    p.add_argument("--beta", type=float, default=4.0, help="temperature of weighted pooling")
    p.add_argument("--aggregator", default="mean", choices=["mean", "max", "topk"])
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--weighting", default="uniform", choices=["uniform", "sigma_late", "sigma-late", "learned"])
    p.add_argument("--alpha", type=float, default=1.0, help="sigma-late rate")
    p.add_argument("--fit-split", default=None)
    p.add_argument("--fit-tracks", type=int, default=4)
    p.add_argument("--fit-target", default=None,
                   choices=["region", "fundamental", "band", "stem", "output"], help="default: --gt-range")
    p.add_argument("--tau", type=float, default=0.5, help="binarisation threshold")
    p.add_argument("--threshold-db", type=float, default=-30.0)
    p.add_argument("--min-share", type=float, default=0.1)
    p.add_argument("--no-per-head", action="store_true", help="head-mean capture (no head selection)")
    p.add_argument("--head-k", type=int, default=None, help="also run head selection with this k")
    p.add_argument("--head-metric", default="ap", choices=["ap", "iou"])
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-budget-mb", type=float, default=4096.0)
    p.add_argument("--no-figures", action="store_true")


@command("head-select", "rank heads per concept on an eval folder; compare all / top-k / bottom-k")
def _heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="an eval results folder (run with per-head capture)")
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--metric", default="ap", choices=["ap", "iou"])
    p.add_argument("--gt", default="region", choices=["region", "fundamental", "band", "stem", "output"])
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--lam", type=float, default=1.0, help="consistency penalty of the label-free score")
    p.add_argument("--no-figures", action="store_true")


@command("render-dataset", "render a Slakh2100-format dataset with FluidSynth")
def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracks", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per track")
    p.add_argument("--soundfont", default=None, help="a .sf2 file (default: the system GM soundfont)")
    p.add_argument("--source", default="mixed", choices=["mixed", "patterns", "corpus"],
                   help="generated patterns, music21 corpus scores, or both")
    p.add_argument("--workers", type=int, default=1, help="parallel render processes")


@command("train-default", "render data and train the embedded default model")
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--data", default=None, help="reuse a rendered dataset folder")
    p.add_argument("--seed", type=int, default=0)


@command("sites", "list the attention sites of a model and the prompt's tokens")
def _sites_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded")
    p.add_argument("--prompt", default="bass and drums")
    p.add_argument("--device", default="cpu")
    p.add_argument("--duration", type=float, default=4.0, help="seconds (sets the query lattices shown)")


@command("convergence", "attention entropy per layer and step, stable/fast layers, freeze sweep, LSAC comparison")
def _convergence_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text prompt")
    p.add_argument("--model", default="embedded", help="'embedded', tiny:<family>, a hub id or a local folder")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=4.0, help="seconds of audio")
    p.add_argument("--device", default="cpu")
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


def _add_intervention_commands() -> None:
    """patch, caa, sae, steer, ablate (flags in engine/interventions/cli_args.py)."""
    from engine.interventions.cli_args import ARGUMENTS

    COMMANDS.update(ARGUMENTS)


_add_intervention_commands()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="AIBA Studio: look inside text-to-audio diffusion models while they generate.",
    )
    parser.add_argument("--self-test", action="store_true", help="open the GUI, run a short generation, exit 0 on success")
    parser.add_argument("--screenshot", default=None, help="with --self-test: save a screenshot here")
    parser.add_argument("--model", dest="gui_model", default="embedded", help="model the GUI starts with")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (help_text, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _run_command(args: argparse.Namespace) -> int:
    from engine import cli

    return cli.dispatch(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command:
        return _run_command(args)
    from gui import app

    if args.self_test:
        return app.self_test(args.screenshot, model=args.gui_model)
    return app.run([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
