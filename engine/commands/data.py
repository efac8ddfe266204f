"""``render-dataset`` and ``train-default``: data and the embedded default model."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands.registry import Command, register
from engine.recipe import LIMITS, check_float, check_int


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracks", type=int, required=True, help="number of tracks to render")
    p.add_argument("--out", required=True, help="dataset folder (Slakh2100 layout)")
    p.add_argument("--seed", type=int, default=0, help=f"random seed, 0..{LIMITS.seed_max}")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per track")
    p.add_argument("--soundfont", default=None, help="a .sf2 file (default: the system GM soundfont)")
    p.add_argument("--source", default="mixed", choices=["mixed", "patterns", "corpus"],
                   help="generated patterns, music21 corpus scores, or both")
    p.add_argument("--workers", type=int, default=1, help="parallel render processes")


def _render_build(args: argparse.Namespace) -> argparse.Namespace:
    check_int("--tracks", args.tracks, 1, 100_000)
    check_int("--seed", args.seed, 0, LIMITS.seed_max)
    check_float("--duration", args.duration, 0.0, LIMITS.duration_max_s, low_open=True)
    check_int("--workers", args.workers, 1, 256)
    return args


def _render_run(args: argparse.Namespace, progress) -> str:
    from engine.data import render_dataset

    paths = render_dataset(Path(args.out), args.tracks, seed=args.seed, duration_s=args.duration,
                           soundfont=args.soundfont, progress=progress, workers=args.workers, source=args.source)
    return f"{args.out} ({len(paths)} tracks)"


register(Command(
    name="render-dataset",
    summary="render a Slakh2100-format dataset with FluidSynth",
    example="python main.py render-dataset --tracks 40 --out data/slakh-tiny",
    outputs="OUT/TrackNNNNN/{metadata.yaml, mix.flac, stems/Sxx.flac, MIDI/Sxx.mid, all_src.mid}",
    add_arguments=_render_args, build=_render_build, execute=_render_run, unit="track",
))


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--data", default=None, help="reuse a rendered dataset folder (default: render one)")
    p.add_argument("--seed", type=int, default=0, help=f"random seed, 0..{LIMITS.seed_max}")


def _train_build(args: argparse.Namespace) -> argparse.Namespace:
    check_int("--seed", args.seed, 0, LIMITS.seed_max)
    return args


def _train_run(args: argparse.Namespace, progress) -> Path:
    from engine.models.embedded.train import train_default

    return train_default(Path(args.out), data_dir=Path(args.data) if args.data else None, seed=args.seed)


register(Command(
    name="train-default",
    summary="render data and train the embedded default model",
    example="python main.py train-default --out models/aiba-slakh-tiny",
    outputs="OUT/: a diffusers-format model folder with its card and loss curve",
    add_arguments=_train_args, build=_train_build, execute=_train_run,
))
