"""``train-scorer``: train the instrument scorer that ``patch`` and ``steer`` score with."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.commands.flags import add_recipe, fields_of, int_list, recipe_kwargs
from engine.commands.registry import Command, register
from engine.recipe import LIMITS, Recipe, check_int

#: Render seeds of the scorer's data. The embedded generator trained on ``render-dataset --seed 0``
#: and RESULTS' held-out evaluation uses seed 1000; each track's stream is default_rng([seed, index]).
TRAIN_SEED = 2000
TEST_SEED = 3000


@dataclass(frozen=True, kw_only=True)
class TrainScorerOptions(Recipe):
    """Where to write, which data, how long to train; the recipe fields set the generated check."""

    out: str
    data: str | None = None  # a rendered training set; None: render one into work/train
    test_data: str | None = None  # a rendered held-out set; None: render one into work/test
    work: str | None = None  # where rendered data goes (default: the user cache)
    tracks: int = 160
    test_tracks: int = 80
    track_duration: float = 12.0
    train_steps: int = 1000
    generated_seeds: str = "0,1,2,3"  # "" skips the check on the model's own generations

    def validate_all(self) -> TrainScorerOptions:
        self.validate(require_prompt=False)
        check_int("--tracks", self.tracks, 1, 100_000)
        check_int("--test-tracks", self.test_tracks, 1, 100_000)
        check_int("--train-steps", self.train_steps, 1, 1_000_000)
        for s in int_list(self.generated_seeds, "--generated-seeds") or []:
            check_int("--generated-seeds", s, 0, LIMITS.seed_max)
        if not 4.5 <= float(self.track_duration) <= 600:
            from engine.types import EngineError

            raise EngineError(f"--track-duration {self.track_duration} must be 4.5-600 s (evaluation windows are 4.1 s)")
        return self


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="model folder to write (model.safetensors, config.json, training.json)")
    p.add_argument("--data", default=None, help="a rendered training set (default: render --tracks with seed 2000)")
    p.add_argument("--test-data", default=None, help="a rendered held-out set (default: render --test-tracks, seed 3000)")
    p.add_argument("--work", default=None, help="folder for rendered data (default: the user cache)")
    p.add_argument("--tracks", type=int, default=160, help="training tracks to render")
    p.add_argument("--test-tracks", type=int, default=80, help="held-out tracks to render")
    p.add_argument("--track-duration", type=float, default=12.0, help="seconds per rendered track")
    p.add_argument("--train-steps", type=int, default=1000, help="optimiser steps (batch 32)")
    p.add_argument("--generated-seeds", default="0,1,2,3",
                   help="seeds of the check on --model's generations of 'bass', 'drums', ...; '' skips it")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    add_recipe(p, prompt=False, seed=False, steps=25)


def _build(args: argparse.Namespace) -> TrainScorerOptions:
    return fields_of(TrainScorerOptions, args, **recipe_kwargs(args)).validate_all()


def _dataset(given: str | None, work: Path, name: str, tracks: int, seed: int, duration: float, say) -> Path:
    if given is not None:
        return Path(given)
    import yaml

    from engine.data.render import render_dataset

    target = work / name
    found = sorted(target.glob("Track*/metadata.yaml"))
    if len(found) == tracks and all(
            (yaml.safe_load(f.read_text()).get("render") or {}).get("seed") == seed for f in found[:1] + found[-1:]):
        say(f"reusing {tracks} tracks in {target}")
        return target
    render_dataset(target, tracks, seed=seed, duration_s=duration)
    return target


def run_train_scorer(o: TrainScorerOptions, progress=None) -> Path:
    """Render (or reuse) data, train, evaluate held-out and on generations, write the model folder."""
    import torch

    from engine.output_dir import Output
    from engine.paths import cache_dir
    from engine.scoring.train import evaluate_generated, train_scorer

    o.validate_all()
    lines: list[str] = []

    def say(msg: str) -> None:
        lines.append(msg)
        print(msg, flush=True)

    t_start = time.time()
    torch.set_num_threads(1)
    with Output(o.out) as claim:
        work = Path(o.work) if o.work else cache_dir() / "scorer-data"
        train_dir = _dataset(o.data, work, "train", o.tracks, TRAIN_SEED, o.track_duration, say)
        test_dir = _dataset(o.test_data, work, "test", o.test_tracks, TEST_SEED, o.track_duration, say)
        model, report = train_scorer(claim.work, train_dir, test_dir, o.train_steps, o.seed, log=say)
        seeds = int_list(o.generated_seeds, "--generated-seeds") or []
        if seeds:
            from engine.backends.registry import load_backend

            backend = load_backend(o.model, device=o.device)
            t0 = time.time()
            report["generated"] = evaluate_generated(model, backend, seeds, o.steps, o.guidance, o.duration, progress)
            report["generated"]["seconds"] = time.time() - t0
            report["generated"]["warnings"] = list(backend.warnings)
            say(f"accuracy on {backend.model_id}'s generations: {report['generated']['accuracy']:.3f}")
        report["options"] = asdict(o)
        report["total_seconds"] = time.time() - t_start
        (claim.work / "training.json").write_text(json.dumps(report, indent=1))
    return claim.final


def _run(options: Any, progress) -> Path:
    return run_train_scorer(options, progress)


register(Command(
    name="train-scorer",
    summary="train the instrument scorer (log-mel CNN) that patch and steer score with",
    example="python main.py train-scorer --out resources/models/aiba-instrument-scorer",
    outputs="OUT/{model.safetensors, config.json, training.json (held-out and generated accuracy, confusion)}",
    add_arguments=_args, build=_build, execute=_run, unit="generation",
))
