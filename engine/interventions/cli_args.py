"""Flags and handlers of ``python main.py patch|caa|sae|steer|ablate`` (light: no torch import).

``main.py`` adds :data:`ARGUMENTS` to its ``COMMANDS``; ``engine/cli.py`` adds :data:`HANDLERS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _common(p: argparse.ArgumentParser, steps: int = 10) -> None:
    p.add_argument("--model", default="embedded", help="'embedded', tiny:audioldm2, a hub id or a local folder")
    p.add_argument("--steps", type=int, default=steps, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--duration", type=float, default=4.0, help="seconds of audio")
    p.add_argument("--device", default="cpu")


def _patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True, help="a concept of resources/prompts/tada_counterfactual.yaml, e.g. drums")
    p.add_argument("--prompt-set", default=None, help="instruments, vocals, tempo, mood, genres or embedded")
    p.add_argument("--layers", default=None, help="cross-attention layer numbers or site names, comma-separated (default all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--mode", default="kv", choices=["kv", "k", "v"], help="substitute keys and values, keys or values")
    p.add_argument("--max-pairs", type=int, default=None, help="use only the first N prompt pairs")
    p.add_argument("--scorer", default=None, help="band-template (default) or clap:<local CLAP folder>")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)


def _caa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True, help="concept of resources/prompts/tada_steering.yaml, e.g. drums, piano")
    p.add_argument("--positive", action="append", default=[], help="a positive prompt (repeat); default: the templates")
    p.add_argument("--negative", action="append", default=[], help="a negative prompt (repeat)")
    p.add_argument("--n-bases", type=int, default=None, help="use only the first N base descriptions")
    p.add_argument("--layers", default=None, help="layers to compute vectors for (default all)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--per-step", action="store_true", help="one vector per denoising step")
    p.add_argument("--out", required=True, help="vector file, .npz or .safetensors")
    _common(p)


def _sae_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True, help="concept of resources/prompts/tada_steering.yaml")
    p.add_argument("--layer", required=True, help="the one layer to train on (number or site name)")
    p.add_argument("--n-bases", type=int, default=None)
    p.add_argument("--seeds", default="0")
    p.add_argument("--expansion", type=int, default=4, help="expansion factor m")
    p.add_argument("--k", type=int, default=16, help="active features per token")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tau", type=int, default=20, help="top-τ features summed into the steering vector")
    p.add_argument("--tokens-per-step", type=int, default=None, help="subsample queries per step")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)


def _steer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vectors", required=True, help="a .npz/.safetensors file from `caa` or `sae`")
    p.add_argument("--prompt", required=True)
    p.add_argument("--alpha", type=float, default=10.0, help="steering strength, -200..200")
    p.add_argument("--layers", default=None, help="steer only these layers (default: all the vectors cover)")
    p.add_argument("--renorm", action="store_true", help="rescale each steered token to its original norm")
    p.add_argument("--halves", default="both", choices=["both", "cond", "uncond"], help="CFG halves to steer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-alphas", default=None, help="evaluate over these α (e.g. -20,-10,0,10,20) instead")
    p.add_argument("--functional", default=None, help="with --eval-alphas: the functional layers")
    p.add_argument("--eval-prompt", dest="eval_prompts", action="append", default=[], help="evaluation prompt (repeat)")
    p.add_argument("--eval-seeds", default="0")
    p.add_argument("--scorer", default=None, help="band-template (default) or clap:<folder>")
    p.add_argument("--query", default=None, help="alignment text (default: the vectors' concept)")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)


def _ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True)
    p.add_argument("--mode", default="zero", choices=["zero", "uniform"], help="zeroed output or forced-uniform weights")
    p.add_argument("--layers", default=None, help="layers to ablate (default all)")
    p.add_argument("--per-layer", action="store_true", help="one run per layer instead of all at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    _common(p)


ARGUMENTS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "patch": ("activation patching of cross-attention K/V per layer, with TADA's impact score", _patch_args),
    "caa": ("contrastive activation addition: steering vectors from contrastive prompts", _caa_args),
    "sae": ("train a TopK sparse autoencoder on one layer; TF-IDF concept features and their vector", _sae_args),
    "steer": ("generate with a steering vector, or evaluate steering over α per layer set", _steer_args),
    "ablate": ("zeroed or forced-uniform cross-attention, per layer or all layers", _ablate_args),
}


def _options(cls, args: argparse.Namespace):
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def _run(kind: str, args: argparse.Namespace) -> int:
    from engine import cli
    from engine.interventions import commands as c

    table = {"patch": (c.PatchOptions, c.run_patch), "caa": (c.CAAOptions, c.run_caa),
             "sae": (c.SAEOptions, c.run_sae), "steer": (c.SteerOptions, c.run_steer),
             "ablate": (c.AblateOptions, c.run_ablate)}
    cls, func = table[kind]
    cli.quiet_libraries()
    with cli.TerminalProgress(kind, unit="run") as bar:
        out = func(_options(cls, args), progress=bar)
    print(f"wrote {out}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    name: (lambda args, name=name: _run(name, args)) for name in ARGUMENTS
}
