"""Train and evaluate the instrument scorer on Slakh-format renders (``python main.py train-scorer``).

Training examples are 2.05 s crops (128 frames) of rendered stems, mixed in the power-mel domain
with random ±6 dB gains: 1 stem (50 %), 2 (30 %) or 3 (20 %) of distinct classes; the first stem is
drawn class-balanced over the six classes plus "other" (stems of the remaining classes, which
have an all-zero target), the partners from any track. A crop is taken where the stem is active
(≥ 50 % of its frames within 40 dB of the stem's peak frame). Loss: binary cross-entropy per class.

Evaluation on a separately rendered set: every 4.096 s window of every stem of the six classes
in which the stem is active (``single-stem accuracy``: the argmax over the six outputs, and the
confusion matrix), and every 4.096 s window of each track's mix against the classes active in it
(per-class average precision). Both go through the audio path (resampling, STFT) the scorer uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analysis.metrics import average_precision
from engine.scoring.model import (
    InstrumentNet,
    InstrumentScorerModel,
    LogMel,
    ScorerConfig,
    power_to_input,
)
from engine.types import EngineError

CROP_FRAMES = 128
EVAL_FRAMES = 256  # 4.096 s at hop 256 / 16 kHz: the embedded model's clip length
ACTIVE_DB = -40.0
OTHER = "other"
STEM_COUNT_P = (0.5, 0.3, 0.2)
OTHER_WEIGHT = 0.5  # "other" is drawn half as often as each named class


@dataclass
class StemMels:
    """Power mels of every usable stem of a dataset."""

    mels: list[np.ndarray]  # (T, M) float32 each
    classes: list[str]  # one of CLASSES or OTHER
    tracks: list[int]
    active: list[np.ndarray]  # (T,) bool each
    paths: list[Path]


def stem_mels(data_dir: str | Path, config: ScorerConfig) -> StemMels:
    """Read every rendered stem under ``data_dir`` and compute its power mel."""
    from engine.data.slakh import SlakhDataset

    ds = SlakhDataset(data_dir)
    if len(ds) == 0:
        raise EngineError(f"no usable tracks under {data_dir}; render some with `python main.py render-dataset`")
    front = LogMel(config)
    out = StemMels([], [], [], [], [])
    for ti, track in enumerate(ds):
        for stem in track.stems:
            audio = stem.load(config.sample_rate)
            if audio.size < config.n_fft:
                continue
            with torch.no_grad():
                mel = front(torch.from_numpy(audio)[None])[0].numpy()
            frame_db = 10 * np.log10(mel.sum(axis=1) + 1e-12)
            if not np.isfinite(frame_db).any() or frame_db.max() < -100:
                continue
            out.mels.append(mel.astype(np.float32))
            out.classes.append(stem.inst_class if stem.inst_class in config.classes else OTHER)
            out.tracks.append(ti)
            out.active.append(frame_db > frame_db.max() + ACTIVE_DB)
            out.paths.append(stem.audio_path)
    if not any(c in config.classes for c in out.classes):
        raise EngineError(f"no stems of {', '.join(config.classes)} under {data_dir}; render a dataset there")
    return out


def _valid_starts(active: np.ndarray, length: int) -> np.ndarray:
    """Crop starts whose window is at least half active."""
    if active.size < length:
        return np.zeros(0, dtype=int)
    c = np.concatenate([[0], np.cumsum(active)])
    share = (c[length:] - c[:-length]) / length
    return np.flatnonzero(share >= 0.5)


class MixSampler:
    """Random multi-label training examples (see the module docstring)."""

    def __init__(self, stems: StemMels, config: ScorerConfig, rng: np.random.Generator) -> None:
        self.stems, self.config, self.rng = stems, config, rng
        self.starts = [_valid_starts(a, CROP_FRAMES) for a in stems.active]
        groups = list(config.classes) + [OTHER]
        self.by_class = {g: [i for i, c in enumerate(stems.classes) if c == g and self.starts[i].size] for g in groups}
        self.groups = [g for g in groups if self.by_class[g]]
        w = np.array([OTHER_WEIGHT if g == OTHER else 1.0 for g in self.groups])
        self.group_p = w / w.sum()
        self.usable = [i for i in range(len(stems.mels)) if self.starts[i].size]

    def _crop(self, i: int) -> np.ndarray:
        s = int(self.rng.choice(self.starts[i]))
        return self.stems.mels[i][s:s + CROP_FRAMES]

    def example(self) -> tuple[np.ndarray, np.ndarray]:
        """One power-mel crop ``(CROP_FRAMES, M)`` and its multi-hot target."""
        rng = self.rng
        n = int(rng.choice(len(STEM_COUNT_P), p=STEM_COUNT_P)) + 1
        first = self.groups[int(rng.choice(len(self.groups), p=self.group_p))]
        picked = [int(rng.choice(self.by_class[first]))]
        seen = {first}
        while len(picked) < n:
            j = int(rng.choice(self.usable))
            c = self.stems.classes[j]
            if c in seen and c != OTHER:
                continue
            seen.add(c)
            picked.append(j)
        power = sum(self._crop(j) * 10 ** (rng.uniform(-6, 6) / 10) for j in picked)
        target = np.array([float(c in seen) for c in self.config.classes], dtype=np.float32)
        return np.asarray(power, dtype=np.float32), target

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.example() for _ in range(size)), strict=True)
        x = power_to_input(torch.from_numpy(np.stack(xs)), self.config.top_db)
        return x, torch.from_numpy(np.stack(ys))


def train_scorer_net(stems: StemMels, config: ScorerConfig, steps: int = 1500, batch_size: int = 32,
                     lr: float = 2e-3, seed: int = 0, log: Callable[[int, float], None] | None = None
                     ) -> tuple[InstrumentNet, list[dict[str, float]]]:
    """AdamW with 50 warm-up steps and cosine decay; returns the net (eval mode) and the loss log."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = InstrumentNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    sampler = MixSampler(stems, config, rng)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rows, running = [], []
    net.train()
    for step in range(1, steps + 1):
        frac = min(1.0, step / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr * frac
        x, y = sampler.batch(batch_size)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(float(loss))
        if step % 50 == 0 or step == steps:
            rows.append({"step": step, "loss": float(np.mean(running))})
            running = []
            if log is not None:
                log(step, rows[-1]["loss"])
    return net.eval(), rows


def _windows(n_samples: int, sr: int, hop: int) -> list[tuple[int, int]]:
    size = EVAL_FRAMES * hop
    return [(s, s + size) for s in range(0, n_samples - size + 1, size)]


def evaluate_heldout(model: InstrumentScorerModel, data_dir: str | Path) -> dict[str, Any]:
    """Single-stem accuracy and confusion matrix, and mix per-class AP, on a held-out dataset."""
    from engine.data.slakh import SlakhDataset

    cfg = model.config
    classes = list(cfg.classes)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    mix_scores: list[list[float]] = []
    mix_labels: list[list[int]] = []
    for track in SlakhDataset(data_dir):
        audios = {}
        for stem in track.stems:
            audio = stem.load(cfg.sample_rate)
            audios[stem.stem_id] = (stem.inst_class, audio)
        for cls, audio in audios.values():
            if cls not in classes:
                continue
            for a, b in _windows(audio.size, cfg.sample_rate, cfg.hop_length):
                if not _window_active(audio[a:b], cfg):
                    continue
                p = model.probabilities(audio[a:b], cfg.sample_rate)
                confusion[classes.index(cls), int(np.argmax([p[c] for c in classes]))] += 1
        mix = track.load_mix(cfg.sample_rate)
        for a, b in _windows(mix.size, cfg.sample_rate, cfg.hop_length):
            present = {cls for cls, audio in audios.values() if cls in classes and _window_active(audio[a:b], cfg)}
            if not present:
                continue
            p = model.probabilities(mix[a:b], cfg.sample_rate)
            mix_scores.append([p[c] for c in classes])
            mix_labels.append([int(c in present) for c in classes])
    n = int(confusion.sum())
    if n == 0:
        raise EngineError(f"no active stem windows of {', '.join(classes)} in {data_dir}; render longer tracks")
    per_class = {c: float(confusion[i, i] / max(1, confusion[i].sum())) for i, c in enumerate(classes)}
    scores, labels = np.array(mix_scores), np.array(mix_labels)
    ap = {c: average_precision(scores[:, i], labels[:, i]) for i, c in enumerate(classes)} if len(scores) else {}
    return {"windows": n, "accuracy": float(np.trace(confusion) / n), "per_class_accuracy": per_class,
            "balanced_accuracy": float(np.mean(list(per_class.values()))),
            "confusion": confusion.tolist(), "classes": classes,
            "mix_windows": int(len(scores)), "mix_average_precision": ap,
            "mix_mean_average_precision": float(np.nanmean(list(ap.values()))) if ap else float("nan")}


def _window_active(audio: np.ndarray, config: ScorerConfig) -> bool:
    """At least half of the window's 0.1 s frames above −45 dBFS (the evaluation's activity rule)."""
    hop = config.sample_rate // 10
    n = audio.size // hop
    if n == 0:
        return False
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    return bool(np.mean(rms > 10 ** (-45 / 20)) >= 0.5)


GENERATED_PROMPTS: dict[str, str] = {"Bass": "bass", "Drums": "drums", "Guitar": "guitar", "Piano": "piano",
                                     "Strings": "strings", "Organ": "organ"}


def evaluate_generated(model: InstrumentScorerModel, backend, seeds: list[int], steps: int = 25,
                       guidance: float = 3.0, duration: float = 4.0,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Accuracy (argmax = the prompt's class) on a model's generations of single-instrument prompts."""
    from engine.types import GenerationRequest

    classes = list(model.config.classes)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    own_prob: dict[str, list[float]] = {c: [] for c in classes}
    total, done = len(classes) * len(seeds), 0
    for cls in classes:
        for seed in seeds:
            r = backend.generate(GenerationRequest(prompt=GENERATED_PROMPTS[cls], seed=int(seed), steps=steps,
                                                   guidance=guidance, duration=duration, capture=False))
            p = model.probabilities(np.asarray(r.audio, np.float64), r.sample_rate)
            confusion[classes.index(cls), int(np.argmax([p[c] for c in classes]))] += 1
            own_prob[cls].append(p[cls])
            done += 1
            if progress is not None:
                progress(done, total)
    n = int(confusion.sum())
    return {"model": backend.model_id, "prompts": [GENERATED_PROMPTS[c] for c in classes],
            "seeds": [int(s) for s in seeds], "steps": steps, "guidance": guidance, "duration": duration,
            "accuracy": float(np.trace(confusion) / n), "confusion": confusion.tolist(), "classes": classes,
            "per_class_accuracy": {c: float(confusion[i, i] / max(1, confusion[i].sum()))
                                   for i, c in enumerate(classes)},
            "mean_own_probability": {c: float(np.mean(v)) for c, v in own_prob.items()}}


def train_scorer(out_dir: str | Path, train_dir: str | Path, test_dir: str | Path, steps: int = 1500,
                 seed: int = 0, batch_size: int = 32, log: Callable[[str], None] | None = None
                 ) -> tuple[InstrumentScorerModel, dict[str, Any]]:
    """Train on ``train_dir``, evaluate on ``test_dir``, write weights + config into ``out_dir``."""
    say = log or (lambda _msg: None)
    config = ScorerConfig()
    t0 = time.time()
    stems = stem_mels(train_dir, config)
    t_feat = time.time() - t0
    say(f"{len(stems.mels)} stems from {train_dir} in {t_feat:.0f} s")
    t1 = time.time()
    net, rows = train_scorer_net(stems, config, steps, batch_size, seed=seed,
                                 log=lambda s, v: say(f"step {s}/{steps} loss {v:.4f}"))
    t_train = time.time() - t1
    n_params = sum(p.numel() for p in net.parameters())
    counts = {c: stems.classes.count(c) for c in (*config.classes, OTHER)}
    config = ScorerConfig(extra={"train_data": str(train_dir), "train_stems": counts, "steps": steps,
                                 "batch_size": batch_size, "seed": seed, "parameters": int(n_params)})
    model = InstrumentScorerModel(config, net)
    t2 = time.time()
    heldout = evaluate_heldout(model, test_dir)
    say(f"held-out single-stem accuracy {heldout['accuracy']:.3f} over {heldout['windows']} windows")
    model.save(out_dir)
    report = {"train_data": str(train_dir), "test_data": str(test_dir), "train_stems": counts,
              "parameters": int(n_params), "feature_seconds": t_feat, "train_seconds": t_train,
              "eval_seconds": time.time() - t2, "loss": rows, "heldout": heldout}
    return model, report
