"""``patch``, ``caa``, ``sae``, ``steer`` and ``ablate``: TADA's patching and steering, ablations."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.flags import (
    add_cluster,
    add_recipe,
    cluster_spec,
    fields_of,
    float_list,
    int_list,
    recipe_kwargs,
)
from engine.commands.registry import Command, lazy, register
from engine.recipe import LIMITS, check_float, check_int


def _seeds_flag(p: argparse.ArgumentParser, name: str = "--seeds") -> None:
    p.add_argument(name, default="0", help="comma-separated seeds, e.g. 0,1,2")


def _patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True,
                   help="a concept of resources/prompts/tada_counterfactual.yaml, e.g. drums")
    p.add_argument("--prompt-set", default=None,
                   help="instruments, vocals, tempo, mood, genres or embedded (default: the first holding the concept)")
    p.add_argument("--layers", default=None, help="cross-attention layer numbers or site names, comma-separated (default all)")
    _seeds_flag(p)
    p.add_argument("--mode", default="kv", choices=["kv", "k", "v"], help="substitute keys and values, keys or values")
    p.add_argument("--max-pairs", type=int, default=None, help="use only the first N prompt pairs")
    p.add_argument("--scorer", default=None, help="instrument (default), instrument:<folder>, band-template or clap:<local CLAP folder>")
    p.add_argument("--out", required=True, help="output folder (patch_<concept>.json is added to it)")
    add_recipe(p, prompt=False, seed=False, steps=10)
    add_cluster(p)  # Ray items: per pair x seed the target and source runs, then one per layer x pair x seed


def _caa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True, help="concept of resources/prompts/tada_steering.yaml, e.g. drums, piano")
    p.add_argument("--positive", action="append", default=[], help="a positive prompt (repeat); default: the templates")
    p.add_argument("--negative", action="append", default=[], help="a negative prompt (repeat)")
    p.add_argument("--n-bases", type=int, default=None, help="use only the first N base descriptions")
    p.add_argument("--layers", default=None, help="layers to compute vectors for (default all)")
    _seeds_flag(p)
    p.add_argument("--per-step", action="store_true", help="one vector per denoising step")
    p.add_argument("--out", required=True, help="vector file, .npz or .safetensors")
    add_recipe(p, prompt=False, seed=False, steps=10)
    add_cluster(p)  # Ray items: one run per prompt x seed; the means and difference are formed here


def _sae_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concept", required=True, help="concept of resources/prompts/tada_steering.yaml")
    p.add_argument("--layer", required=True, help="the one layer to train on (number or site name)")
    p.add_argument("--n-bases", type=int, default=None, help="use only the first N base descriptions")
    _seeds_flag(p)
    p.add_argument("--expansion", type=int, default=4, help="expansion factor m (features = m x width)")
    p.add_argument("--k", type=int, default=16, help="active features per token (TopK)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs")
    p.add_argument("--tau", type=int, default=20, help="top-τ features summed into the steering vector")
    p.add_argument("--tokens-per-step", type=int, default=None, help="subsample queries per step")
    p.add_argument("--out", required=True, help="output folder")
    add_recipe(p, prompt=False, seed=False, steps=10)
    add_cluster(p)  # Ray items: one collecting run per prompt x seed; training and TF-IDF scoring here


def _steer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vectors", required=True, help="a .npz/.safetensors file from `caa` or `sae`")
    p.add_argument("--alpha", type=float, default=10.0, help="steering strength, -200..200")
    p.add_argument("--layers", default=None, help="steer only these layers (default: all the vectors cover)")
    p.add_argument("--renorm", action="store_true", help="rescale each steered token to its original norm")
    p.add_argument("--halves", default="both", choices=["both", "cond", "uncond"], help="CFG halves to steer")
    p.add_argument("--eval-alphas", default=None, help="evaluate over these α (e.g. -20,-10,0,10,20) instead")
    p.add_argument("--functional", default=None, help="with --eval-alphas: the functional layers")
    p.add_argument("--eval-prompt", dest="eval_prompts", action="append", default=[],
                   help="evaluation prompt (repeat; default: --prompt)")
    _seeds_flag(p, "--eval-seeds")
    p.add_argument("--scorer", default=None, help="instrument (default), instrument:<folder>, band-template or clap:<folder>")
    p.add_argument("--query", default=None, help="alignment text (default: the vectors' concept)")
    p.add_argument("--out", required=True, help="output folder")
    add_recipe(p, steps=10)
    add_cluster(p)  # with --eval-alphas; Ray items: unsteered runs, then one per layer set x α x prompt x seed


def _ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="zero", choices=["zero", "uniform"], help="zeroed output or forced-uniform weights")
    p.add_argument("--layers", default=None, help="layers to ablate (default all)")
    p.add_argument("--per-layer", action="store_true", help="one run per layer instead of all at once")
    p.add_argument("--out", required=True, help="output folder")
    add_recipe(p, steps=10)


def _check_lists(args: argparse.Namespace) -> None:
    """Seed and α lists, and α, within the recipe's limits before any model loads."""
    for flag in ("seeds", "eval_seeds"):
        for seed in int_list(getattr(args, flag, None), f"--{flag.replace('_', '-')}") or []:
            check_int(f"each of --{flag.replace('_', '-')}", seed, 0, LIMITS.seed_max)
    top = LIMITS.steer_alpha_max
    if hasattr(args, "alpha"):
        check_float("--alpha", args.alpha, -top, top)
    for alpha in float_list(getattr(args, "eval_alphas", None), "--eval-alphas") or []:
        check_float("each of --eval-alphas", alpha, -top, top)
    for flag in ("max_pairs", "n_bases", "tokens_per_step"):
        if getattr(args, flag, None) is not None:
            check_int(f"--{flag.replace('_', '-')}", getattr(args, flag), 1, 1_000_000)
    for flag, high in (("expansion", 64), ("k", 100_000), ("epochs", 100_000), ("tau", 100_000)):
        if hasattr(args, flag) and isinstance(getattr(args, flag), int):
            check_int(f"--{flag}", getattr(args, flag), 1, high)


def _builder(class_name: str, require_prompt: bool):
    def build(args: argparse.Namespace) -> Any:
        from engine.interventions import commands

        _check_lists(args)
        extra = {"cluster": cluster_spec(args)} if hasattr(args, "ray") else {}
        options = fields_of(getattr(commands, class_name), args, **recipe_kwargs(args), **extra)
        options.validate(require_prompt=require_prompt)
        return options

    return build


for _name, _summary, _example, _outputs, _args, _cls, _fn, _prompt in (
    ("patch", "activation patching of cross-attention K/V per layer, with TADA's impact score",
     "python main.py patch --concept drums --prompt-set embedded --seeds 0,1 --out patch/\n"
     "  python main.py patch --concept drums --seeds 0,1 --ray local --workers 2 --out patch/  (docs/CLUSTER.md)",
     "OUT/patch_<concept>.json (impact per layer, functional layers)", _patch_args, "PatchOptions", "run_patch",
     False),
    ("caa", "contrastive activation addition: steering vectors from contrastive prompts",
     "python main.py caa --concept piano --out vectors/piano.safetensors\n"
     "  python main.py caa --concept piano --seeds 0,1,2 --ray auto --workers 8 --out vectors/piano.safetensors",
     "the vector file OUT (.npz or .safetensors)", _caa_args, "CAAOptions", "run_caa", False),
    ("sae", "train a TopK sparse autoencoder on one layer; TF-IDF concept features and their vector",
     "python main.py sae --concept drums --layer 3 --out sae/drums\n"
     "  python main.py sae --concept drums --layer 3 --seeds 0,1 --ray local --workers 2 --out sae/drums",
     "OUT/sae.safetensors, sae_<concept>.npz (steering vector), sae_report.json", _sae_args, "SAEOptions",
     "run_sae", False),
    ("steer", "generate with a steering vector, or evaluate steering over α per layer set",
     "python main.py steer --vectors vectors/piano.safetensors --prompt 'bass and drums' --alpha 15 --out steer/\n"
     "  python main.py steer --vectors vectors/piano.safetensors --prompt 'bass and drums' --eval-alphas=-20,0,20 "
     "--functional 3,5 --ray local --workers 2 --out steer_eval/",
     "OUT/unsteered.wav, steered.wav, steer.json; with --eval-alphas steer_eval.json", _steer_args,
     "SteerOptions", "run_steer", True),
    ("ablate", "zeroed or forced-uniform cross-attention, per layer or all layers",
     "python main.py ablate --prompt 'bass and drums' --mode zero --per-layer --out ablate/",
     "OUT/baseline.wav, ablated*.wav, ablate.json (mel distance to the baseline)", _ablate_args, "AblateOptions",
     "run_ablate", True),
):
    register(Command(name=_name, summary=_summary, example=_example, outputs=_outputs, add_arguments=_args,
                     build=_builder(_cls, _prompt), execute=lazy("engine.interventions.commands", _fn), unit="run"))
