"""Headless commands behind ``python main.py <command>``.

Each command turns an :class:`EngineError` into a one-line message on stderr and exit code 2;
heavy imports happen inside the command so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.types import EngineError, RunCancelled


class TerminalProgress:
    """A tqdm progress bar on stderr, usable as ``callable(done, total)``."""

    def __init__(self, desc: str, unit: str = "step") -> None:
        self.desc = desc
        self.unit = unit
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cmd_analyze(args: argparse.Namespace) -> int:
    from engine.analyze import AnalyzeOptions, analyze

    grid_t, grid_f = _parse_grid(args.grid)
    options = AnalyzeOptions(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        model=args.model,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        duration=args.duration,
        sites=args.sites,
        per_head=args.per_head,
        device=args.device,
        grid=(grid_t, grid_f),
        pooling=args.pooling,
        keywords=[w.strip() for w in args.keywords.split(",") if w.strip()] if args.keywords else None,
        boundary=args.boundary,
        aggregator=args.aggregator,
        weighting=args.weighting,
        memory_budget_mb=args.memory_budget_mb,
        stream_dir=args.stream_dir,
        figures=not args.no_figures,
        out=args.out,
        lsac=getattr(args, "lsac", "off"),
        lsac_profile=getattr(args, "lsac_profile", None),
        lsac_budget_mb=getattr(args, "lsac_budget_mb", 1024.0),
        lsac_dtype=getattr(args, "lsac_dtype", "model"),
        lsac_kinds=tuple(getattr(args, "lsac_kinds", "self").split(",")),
    )
    with TerminalProgress("denoising") as bar:
        out = analyze(options, progress=bar)
    print(f"wrote {out}")
    return 0


def _parse_grid(text: str) -> tuple[int, int]:
    try:
        grid_t, grid_f = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise EngineError(f"bad --grid {text!r}: write it as TIMExMEL, e.g. 128x64") from exc
    return grid_t, grid_f


def _cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation import EvalOptions, run_eval

    options = EvalOptions(
        dataset=args.dataset, out=args.out, model=args.model,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        templates=args.templates, seed=args.seed, seed_mode=args.seed_mode, steps=args.steps,
        guidance=args.guidance, duration=args.duration, offset=args.offset, grid=_parse_grid(args.grid),
        window=args.window, min_active=args.min_active, gt_range=args.gt_range,
        max_tracks=args.max_tracks, split=args.split, cross_only=not args.all_sites,
        pooling=args.pooling, aggregator=args.aggregator, topk=args.topk,
        weighting=args.weighting.replace("-", "_"), alpha=args.alpha, beta=args.beta, tau=args.tau,
        per_head=not args.no_per_head, resume=not args.no_resume, fit_split=args.fit_split,
        fit_tracks=args.fit_tracks, fit_target=args.fit_target, head_k=args.head_k,
        head_metric=args.head_metric, threshold_db=args.threshold_db, min_share=args.min_share,
        device=args.device, memory_budget_mb=args.memory_budget_mb, figures=not args.no_figures,
    )
    with TerminalProgress("evaluating", unit="item") as bar:
        out = run_eval(options, progress=bar)
    print(f"wrote {out}")
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    from engine.evaluation import run_head_selection

    summary = run_head_selection(args.out, k=args.k, metric=args.metric, gt=args.gt, tau=args.tau,
                                 lam=args.lam, figures=not args.no_figures)
    print(f"wrote head masks and comparison to {args.out} ({len(summary)} entries)")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from engine.data import render_dataset

    if args.tracks < 1:
        raise EngineError(f"--tracks must be at least 1 (got {args.tracks})")
    with TerminalProgress("rendering", unit="track") as bar:
        paths = render_dataset(
            Path(args.out), args.tracks, seed=args.seed, duration_s=args.duration,
            soundfont=args.soundfont, progress=bar, workers=args.workers, source=args.source,
        )
    print(f"wrote {len(paths)} tracks to {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from engine.models.embedded.train import train_default

    folder = train_default(Path(args.out), data_dir=Path(args.data) if args.data else None, seed=args.seed)
    print(f"wrote model to {folder}")
    return 0


def _cmd_sites(args: argparse.Namespace) -> int:
    from engine.backends.registry import load_backend

    backend = load_backend(args.model, device=args.device)
    print(f"model: {backend.model_id} ({backend.family}); lattices (time x freq) for {args.duration:g} s")
    planned = getattr(backend, "planned_lattice", None)
    for site in backend.sites():
        lat = site.lattice or (planned(site.name, args.duration) if planned else None)
        lattice = "x".join(str(v) for v in lat) if lat else "-"
        print(f"{site.index:3d}  {site.kind:5s}  {site.context:5s}  heads={site.heads:<3d} kv={site.kv_heads:<3d} lattice={lattice:8s} {site.name}")
    for context, toks in backend.tokens(args.prompt).items():
        print(f"tokens[{context}]: {' | '.join(toks)}")
    return 0


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise EngineError(f"bad {flag} {text!r}: give whole numbers separated by commas, e.g. 2,4,8") from exc


def _cmd_convergence(args: argparse.Namespace) -> int:
    from engine.convergence.command import ConvergenceOptions, run_convergence

    options = ConvergenceOptions(
        prompt=args.prompt, out=args.out, model=args.model, steps=args.steps, guidance=args.guidance,
        seed=args.seed, duration=args.duration, device=args.device, sites=args.sites,
        late_fraction=args.late_fraction, quantile=args.quantile, group=args.group, pads=args.pads,
        sweep=args.sweep, freeze_steps=_int_list(args.freeze_steps, "--freeze-steps"),
        compare_prompts=[p.strip() for p in (args.compare or "").split("|") if p.strip()],
        seeds=_int_list(args.seeds, "--seeds") or [0],
        presets=[p.strip() for p in args.presets.split(",") if p.strip()],
        budget_mb=args.budget_mb,
    )
    with TerminalProgress("runs", unit="run") as bar:
        out = run_convergence(options, progress=bar)
    print(f"wrote {out}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "analyze": _cmd_analyze,
    "eval": _cmd_eval,
    "head-select": _cmd_heads,
    "render-dataset": _cmd_render,
    "train-default": _cmd_train,
    "sites": _cmd_sites,
    "convergence": _cmd_convergence,
}

# steering and patching commands (patch, caa, sae, steer, ablate)
from engine.interventions.cli_args import HANDLERS as _INTERVENTION_HANDLERS  # noqa: E402

HANDLERS.update(_INTERVENTION_HANDLERS)


def quiet_libraries() -> None:
    """Silence the loading bars and chatter of diffusers/transformers in the terminal."""
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "0")
    for name in ("diffusers", "transformers", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; user errors become one line on stderr and exit code 2."""
    if args.command in ("analyze", "sites", "train-default", "eval", "head-select", "convergence"):
        quiet_libraries()
    try:
        return HANDLERS[args.command](args)
    except RunCancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
