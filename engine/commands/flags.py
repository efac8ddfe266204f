"""Flags shared by several commands, and the parsing of list-valued flags.

The run settings (model, prompt, seed, steps, guidance, duration, device) are declared here once
for every command and become a :class:`~engine.recipe.Recipe` through :func:`recipe_kwargs`; the
recipe's ``validate`` applies the limits (:data:`engine.recipe.LIMITS`).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import EngineError
from engine.recipe import LIMITS

MODEL_HELP = ("'embedded' (the shipped model), tiny:audioldm2 / tiny:stable_audio (random tiny pipelines), "
              "a hub id read from the local Hugging Face cache, or a folder written by save_pretrained")


INT_BOUND = 2**63 - 1


def finite_float(text: str) -> float:
    """argparse type: a finite number (no option of any command takes NaN or infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def bounded_int(text: str) -> int:
    """argparse type: a whole number within ±(2**63 - 1) (larger values fit no setting)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number: {text!r}") from None
    if abs(value) > INT_BOUND:
        raise argparse.ArgumentTypeError(f"{text} is out of range (at most {INT_BOUND})")
    return value


def harden_numbers(p: argparse.ArgumentParser) -> None:
    """Give every ``int`` / ``float`` option of ``p`` the bounded / finite parsers above."""
    for action in p._actions:
        if action.type is float:
            action.type = finite_float
        elif action.type is int:
            action.type = bounded_int


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help=MODEL_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")


def add_recipe(p: argparse.ArgumentParser, *, prompt: bool = True, seed: bool = True, steps: int = 25,
               negative: bool = False) -> None:
    """The run-settings flags: ``prompt`` and ``seed`` only for commands that generate one prompt."""
    add_model(p)
    if prompt:
        p.add_argument("--prompt", required=True, help="text prompt, e.g. 'bass and drums'")
    if negative:
        p.add_argument("--negative-prompt", default="", help="negative prompt (classifier-free guidance)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help=f"random seed, 0..{LIMITS.seed_max}")
    p.add_argument("--steps", type=int, default=steps, help=f"denoising steps, 1..{LIMITS.steps_max}")
    p.add_argument("--guidance", type=float, default=3.0,
                   help=f"classifier-free guidance scale, 0..{LIMITS.guidance_max:g} (0 or 1: no CFG)")
    p.add_argument("--duration", type=float, default=4.0,
                   help=f"seconds of audio, up to {LIMITS.duration_max_s:g} (the model may allow less)")


def recipe_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields present among the parsed flags."""
    names = ("model", "device", "prompt", "negative_prompt", "seed", "steps", "guidance", "duration")
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def parse_grid(text: str) -> tuple[int, int]:
    """``128x64`` → ``(128, 64)``."""
    try:
        grid_t, grid_f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EngineError(f"bad --grid {text!r}: write it as TIMExMEL, e.g. 128x64") from None
    return grid_t, grid_f


def _number_list(text: str | None, flag: str, kind: type, example: str) -> list | None:
    if text is None or not text.strip():
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise EngineError(f"bad {flag} {text!r}: give {what} separated by commas, e.g. {example}") from None


def int_list(text: str | None, flag: str) -> list[int] | None:
    """``2,4,8`` → ``[2, 4, 8]``; ``None`` for an empty flag."""
    return _number_list(text, flag, int, "2,4,8")


def float_list(text: str | None, flag: str) -> list[float] | None:
    """``-10,0,10`` → ``[-10.0, 0.0, 10.0]``; ``None`` for an empty flag."""
    return _number_list(text, flag, float, "-10,0,10")


def words(text: str | None, sep: str = ",") -> list[str]:
    """Comma- (or ``sep``-) separated words, stripped, empties dropped."""
    return [w.strip() for w in (text or "").split(sep) if w.strip()]


def fields_of(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``cls`` (an options dataclass) from the flags with the same names, plus ``overrides``."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **overrides})


def add_cluster(p: argparse.ArgumentParser) -> None:
    """``--ray local|auto|ADDRESS``, ``--workers N``, ``--gpus-per-worker G`` (docs/CLUSTER.md)."""
    p.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                   help="run the work items on Ray: local (start a cluster here), auto (join the running "
                        "one) or host:port / ray://host:port; default: in this process")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers, each loads the model once (default 1; needs --ray)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per Ray worker, fractions share one, e.g. 0.5 (default 0; needs --ray)")


def cluster_spec(args: argparse.Namespace) -> Any:
    """The :class:`~engine.cluster.ClusterSpec` of the ``add_cluster`` flags, validated (one line)."""
    from engine.cluster import ClusterSpec

    address = getattr(args, "ray", None)
    workers = getattr(args, "workers", None)
    gpus = getattr(args, "gpus_per_worker", None)
    if address is None and (workers is not None or gpus is not None):
        raise EngineError("--workers and --gpus-per-worker need --ray local|auto|ADDRESS")
    spec = ClusterSpec(address=address, workers=1 if workers is None else workers,
                       gpus_per_worker=0.0 if gpus is None else gpus)
    spec.validate()
    return spec
