"""``train_default``: render (or reuse) a Slakh-format dataset and train the embedded model.

Step-capped and seeded: the same arguments and thread count give the same weights. Writes the
model folder (EMA weights) plus ``loss_log.csv`` and ``training.json`` into ``out_dir``; the
rendered data and the feature cache go to ``work_dir`` (default ``out_dir/work``), which is
not part of the model. ``out_dir`` is claimed with :class:`engine.output_dir.Output`: built under a
temporary name and renamed when complete (a failed run keeps nothing, also not a default
``work_dir``: pass one outside ``out_dir`` to keep rendered data across failed runs).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from engine.models.embedded.dataset import (
    DEFAULT_CLASSES,
    STEM_COUNT_P,
    ClipSampler,
    extract_features,
    list_stems,
)
from engine.models.embedded.melspec import MelConfig
from engine.models.embedded.pipeline import (
    PREDICTION_TYPES,
    EmbeddedPipeline,
    default_train_scheduler,
    pack_mel,
    training_target,
    with_coord,
)
from engine.output_dir import Output
from engine.types import EngineError

VALIDATION_EVERY = 10  # every 10th track (index % 10 == 9) is held out


def held_out_tracks(n_tracks: int) -> set[int]:
    """Validation tracks: every 10th; all tracks when there are fewer than 30 (tiny data sets)."""
    if n_tracks < 3 * VALIDATION_EVERY:
        return set(range(n_tracks))
    return {t for t in range(n_tracks) if t % VALIDATION_EVERY == VALIDATION_EVERY - 1}


def _rendered_ok(data_dir: Path, tracks: int, seed: int) -> bool:
    found = sorted(data_dir.glob("Track*/metadata.yaml"))
    if len(found) != tracks:
        return False
    meta = yaml.safe_load(found[-1].read_text())
    return int((meta.get("render") or {}).get("seed", -1)) == seed


def prepare_data(work_dir: Path, data_dir: str | Path | None, tracks: int, seed: int,
                 log: Callable[[str], None]) -> Path:
    """The dataset folder: ``data_dir`` as given, or ``work_dir/data`` rendered once."""
    if data_dir is not None:
        return Path(data_dir)
    from engine.data.render import render_dataset

    target = work_dir / "data"
    if _rendered_ok(target, tracks, seed):
        log(f"reusing {tracks} rendered tracks in {target}")
        return target
    t0 = time.time()
    render_dataset(target, tracks, seed=seed)
    log(f"rendered {tracks} tracks in {time.time() - t0:.0f} s")
    return target


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def train_default(out_dir: str | Path, data_dir: str | Path | None = None, tracks: int = 240,
                  steps: int = 2700, seed: int = 0, threads: int = 1, batch_size: int = 16,
                  lr: float = 1e-3, classes: tuple[str, ...] = DEFAULT_CLASSES,
                  work_dir: str | Path | None = None, log_every: int = 25,
                  prediction_type: str = "v_prediction", text_layers: int = 0,
                  stem_count_p: tuple[float, float, float] = STEM_COUNT_P,
                  progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] = print) -> Path:
    """Train ``aiba-slakh-tiny`` and write it to ``out_dir``; returns ``out_dir``."""
    if steps < 1 or batch_size < 1:
        raise EngineError("steps and batch_size must be at least 1")
    if data_dir is not None and not list_stems(data_dir, tuple(classes)):
        raise EngineError(f"no stems of the classes {', '.join(classes)} in {data_dir}: "
                          "render a dataset there or drop --data")
    with Output(out_dir) as claim:
        t_start = time.time()
        torch.set_num_threads(int(threads))
        out = claim.work  # published as out_dir when everything was written
        work = Path(work_dir) if work_dir is not None else out / "work"
        work.mkdir(parents=True, exist_ok=True)
        config = MelConfig()
        data = prepare_data(work, data_dir, tracks, seed, log)
        t0 = time.time()
        feats = extract_features(data, config, tuple(classes), cache_dir=work / "cache")
        n_tracks = int(feats.track.max()) + 1
        val_tracks = {t for t in range(n_tracks) if t % VALIDATION_EVERY == VALIDATION_EVERY - 1}
        held_out = n_tracks >= 3 * VALIDATION_EVERY  # tiny data sets validate on training tracks
        train_sampler = ClipSampler(feats, config, set(range(n_tracks)) - val_tracks if held_out else None,
                                    stem_count_p=stem_count_p)
        val_sampler = ClipSampler(feats, config, val_tracks, stem_count_p=stem_count_p) if held_out else train_sampler
        log(f"features of {len(feats.cls)} stems from {n_tracks} tracks in {time.time() - t0:.0f} s; "
            f"train windows per class: "
            + ", ".join(f"{c}={len(train_sampler.windows[i])}" for i, c in enumerate(classes)))

        pipe = EmbeddedPipeline.build(config, seed=seed, prediction_type=prediction_type,
                                      text_layers=text_layers)
        tok = pipe.tokenizer
        unet, enc = pipe.unet.train(), pipe.text_encoder.train()
        ema_unet, ema_enc = copy.deepcopy(unet).eval(), copy.deepcopy(enc).eval()
        params = list(unet.parameters()) + list(enc.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
        noise_sched = default_train_scheduler(prediction_type)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        warmup = min(100, steps // 10 + 1)

        log_path = out / "loss_log.csv"
        rows: list[dict[str, Any]] = []
        window: list[float] = []
        t_train = time.time()
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup)
            mel, ids, mask, _ = train_sampler.batch(rng, batch_size, tok)
            loss = denoising_loss(unet, enc, noise_sched, mel, ids, mask, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay = min(0.999, (1 + step) / (10 + step))
            _ema_update(ema_unet, unet, decay)
            _ema_update(ema_enc, enc, decay)
            window.append(loss.item())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                rows.append({"step": step + 1, "loss": round(float(np.mean(window)), 5),
                             "lr": round(opt.param_groups[0]["lr"], 7),
                             "elapsed_s": round(time.time() - t_train, 1)})
                window = []
                with open(log_path, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
                log(f"step {step + 1}/{steps} loss {rows[-1]['loss']:.4f} ({rows[-1]['elapsed_s']:.0f} s)")
            if progress is not None:
                progress(step + 1, steps)
        train_s = time.time() - t_train

        val_loss = validation_loss(ema_unet, ema_enc, val_sampler, tok, seed, prediction_type)
        pipe.unet, pipe.text_encoder = ema_unet.eval(), ema_enc.eval()
        summary = {
            "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
            "tracks": n_tracks, "stems": int(len(feats.cls)), "classes": list(classes),
            "validation_tracks": len(val_tracks) if held_out else 0, "final_train_loss": rows[-1]["loss"],
            "validation_loss_ema": round(val_loss, 5), "train_seconds": round(train_s, 1),
            "total_seconds": round(time.time() - t_start, 1), "torch": torch.__version__,
            "data_dir": str(claim.final_path(data)), "prediction_type": prediction_type, "text_layers": text_layers,
            "stem_count_p": list(stem_count_p),
        }
        pipe.info = {"name": "aiba-slakh-tiny", "classes": list(classes), "training": summary}
        pipe.save_pretrained(out)
        (out / "training.json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {claim.final} (validation loss {val_loss:.4f}, {summary['total_seconds']:.0f} s in total)")
    return claim.final


def denoising_loss(unet: torch.nn.Module, enc: torch.nn.Module, sched, mel: torch.Tensor,
                   ids: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """MSE of the UNet's output against its training target (ε or v) for ``mel`` noised to a random
    timestep; noise and timesteps are drawn from ``gen`` (in that order)."""
    latents = pack_mel(mel)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    pred = unet(with_coord(sched.add_noise(latents, noise, t)), t, encoder_hidden_states=enc(ids, mask),
                encoder_attention_mask=mask).sample
    return torch.nn.functional.mse_loss(pred, training_target(sched, latents, noise, t))


def validation_loss(unet: torch.nn.Module, enc: torch.nn.Module, sampler: ClipSampler, tok,
                    seed: int, prediction_type: str = "v_prediction", batches: int = 8,
                    batch_size: int = 16) -> float:
    """Mean training-target MSE (ε or v) on held-out tracks with fixed clips, noise and timesteps."""
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    sched = default_train_scheduler(prediction_type)
    losses = []
    with torch.no_grad():
        for _ in range(batches):
            mel, ids, mask, _ = sampler.batch(rng, batch_size, tok)
            losses.append(float(denoising_loss(unet, enc, sched, mel, ids, mask, gen)))
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> None:
    """``python -m engine.models.embedded.train --out DIR [--steps N] ...``"""
    import argparse

    parser = argparse.ArgumentParser(description="train the embedded default model")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--data", default=None, help="existing Slakh-format folder (default: render one)")
    parser.add_argument("--tracks", type=int, default=240)
    parser.add_argument("--steps", type=int, default=2700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default="v_prediction")
    parser.add_argument("--text-layers", type=int, default=0, help="0: non-contextual text encoder")
    args = parser.parse_args(argv)
    train_default(args.out, data_dir=args.data, tracks=args.tracks, steps=args.steps, seed=args.seed,
                  threads=args.threads, prediction_type=args.prediction_type, text_layers=args.text_layers)


if __name__ == "__main__":
    main()
