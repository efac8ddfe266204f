"""``python -m engine.data --tracks N --out DIR [--seed S]``: render a Slakh-format dataset."""

from __future__ import annotations

import argparse
import sys
import time

from engine.data.render import SOURCES, render_dataset
from engine.types import EngineError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.data", description=__doc__)
    ap.add_argument("--tracks", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--soundfont", default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--source", choices=SOURCES, default="mixed")
    ap.add_argument("--start-index", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} tracks, {time.monotonic() - t0:.1f} s", end="", flush=True)

    try:
        paths = render_dataset(args.out, args.tracks, seed=args.seed, duration_s=args.duration,
                               sample_rate=args.sample_rate, soundfont=args.soundfont,
                               progress=progress, workers=args.workers, source=args.source,
                               start_index=args.start_index)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nwrote {len(paths)} tracks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
