"""Training clips for the embedded model from Slakh-format stems.

Each stem's whole-track power mel is computed once and cached (float16 dB). A training example
picks 1-3 stems of distinct classes that are active in one ``n_frames`` window (class-balanced:
the first class is drawn uniformly; partners come from the same track and window when that track
has them, else from other tracks), mixes their power mels with random gains (the power of a sum
of unrelated sources is close to the sum of their powers) and scales the mix to ``[-1, 1]``. The
caption names the mixed classes in random order with a random template.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from engine.atomic_io import atomic_write
from engine.data.slakh import resolve_dir
from engine.models.embedded.melspec import MelConfig, MelTransform, power_to_unit
from engine.models.embedded.textenc import CLASS_WORDS, WordTokenizer
from engine.types import EngineError

DEFAULT_CLASSES = ("Bass", "Drums", "Guitar", "Piano", "Strings", "Organ")
WINDOW_HOP = 32  # frames between candidate window starts
ACTIVE_RATIO = 0.2  # window mean power / stem's track mean power needed to call it active
SINGLE_TEMPLATES = ("{0}", "a {0}", "{0} playing", "a {0} playing", "{0} solo", "solo {0}",
                    "the {0}", "some {0}")
PAIR_TEMPLATES = ("{0} and {1}", "{0} with {1}", "{0} playing with {1}", "{0} plus {1}",
                  "a {0} and a {1}", "{0} and {1} playing together")
TRIPLE_TEMPLATES = ("{0}, {1} and {2}", "{0} with {1} and {2}", "{0} and {1} and {2}",
                    "{0} plus {1} with {2}")
STEM_COUNT_P = (0.6, 0.3, 0.1)  # probability of 1, 2, 3 stems (v1: 0.45, 0.4, 0.15)
CFG_DROPOUT = 0.1
UNK_RATE = 0.03  # captions that get one <unk> word inserted (so <unk> has a trained embedding)


def canonical(inst_class: str) -> str:
    return "Strings" if inst_class == "Strings (continued)" else inst_class


def list_stems(data_dir: str | Path, classes: tuple[str, ...]) -> list[tuple[int, Path, str]]:
    """``(track index, wav path, class)`` of every stem of ``classes`` in a Slakh-format folder."""
    root = Path(data_dir)
    tracks = sorted(p for p in root.glob("Track*") if (p / "metadata.yaml").is_file())
    if not tracks:
        raise EngineError(f"no Track*/metadata.yaml under {root}; render a dataset there first")
    out = []
    for ti, track in enumerate(tracks):
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        audio_dir, _ = resolve_dir(track, meta.get("audio_dir"), "stems", "audio_dir")  # either release form
        if audio_dir is None:
            continue
        for sid, stem in sorted((meta.get("stems") or {}).items()):
            cls = canonical(str(stem.get("inst_class", "")))
            found = [audio_dir / f"{sid}{ext}" for ext in (".wav", ".flac") if (audio_dir / f"{sid}{ext}").is_file()]
            if cls in classes and stem.get("audio_rendered", True) and found:
                out.append((ti, found[0], cls))
    return out


@dataclass
class StemFeatures:
    """All stems' power mels in dB (float16), concatenated along time."""

    db: np.ndarray  # (N_frames_total, n_mels) float16
    offsets: np.ndarray  # (S + 1,) start of each stem in ``db``
    track: np.ndarray  # (S,) track index
    cls: np.ndarray  # (S,) class index into ``classes``
    classes: tuple[str, ...]

    def stem_power(self, s: int, start: int, n: int) -> np.ndarray:
        a = self.offsets[s] + start
        return np.power(10.0, self.db[a: a + n].astype(np.float32) / 10.0)

    def n_stem_frames(self, s: int) -> int:
        return int(self.offsets[s + 1] - self.offsets[s])


def extract_features(data_dir: str | Path, config: MelConfig, classes: tuple[str, ...],
                     cache_dir: str | Path | None = None) -> StemFeatures:
    """Power mels (dB) of every stem of ``classes``; cached in ``cache_dir`` by content key."""
    stems = list_stems(data_dir, classes)
    key = hashlib.sha1(json.dumps([config.to_dict(), list(classes),
                                   [(t, str(p), c, p.stat().st_size) for t, p, c in stems]]).encode())
    cache = Path(cache_dir) / f"stem_mels_{key.hexdigest()[:12]}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return StemFeatures(z["db"], z["offsets"], z["track"], z["cls"], classes)
    transform = MelTransform(config)
    chunks, offsets, track, cls = [], [0], [], []
    for ti, wav, c in stems:
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        if sr != config.sample_rate:
            raise EngineError(f"{wav} is {sr} Hz; the embedded model needs {config.sample_rate} Hz stems")
        with torch.no_grad():
            power = transform(torch.from_numpy(audio.mean(axis=1)))
        db = 10.0 * torch.log10(power.clamp_min(1e-10))
        chunks.append(db.numpy().astype(np.float16))
        offsets.append(offsets[-1] + db.shape[0])
        track.append(ti)
        cls.append(classes.index(c))
    feats = StemFeatures(np.concatenate(chunks), np.array(offsets), np.array(track), np.array(cls), classes)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda tmp: np.savez(tmp, db=feats.db, offsets=feats.offsets, track=feats.track,
                                                 cls=feats.cls))
    return feats


class ClipSampler:
    """Draws (model-scale mel, caption) pairs from :class:`StemFeatures`, reproducibly by seed."""

    def __init__(self, feats: StemFeatures, config: MelConfig, tracks: set[int] | None = None,
                 stem_count_p: tuple[float, ...] = STEM_COUNT_P) -> None:
        if len(stem_count_p) != 3 or abs(sum(stem_count_p) - 1.0) > 1e-6 or min(stem_count_p) < 0:
            raise EngineError(f"stem_count_p {stem_count_p} must be 3 probabilities (1, 2, 3 stems) summing to 1")
        self.f = feats
        self.config = config
        self.stem_count_p = tuple(float(p) for p in stem_count_p)
        n = config.n_frames
        # active windows: (stem, start) per class, and per track/start the active stems
        self.windows: dict[int, list[tuple[int, int]]] = {c: [] for c in range(len(feats.classes))}
        self.active: dict[tuple[int, int], list[int]] = {}
        for s in range(len(feats.cls)):
            if tracks is not None and int(feats.track[s]) not in tracks:
                continue
            length = feats.n_stem_frames(s)
            if length < n:
                continue
            frame_power = feats.stem_power(s, 0, length).sum(axis=1)
            mean = frame_power.mean()
            if mean <= 0:
                continue
            for start in range(0, length - n + 1, WINDOW_HOP):
                if frame_power[start: start + n].mean() >= ACTIVE_RATIO * mean:
                    self.windows[int(feats.cls[s])].append((s, start))
                    self.active.setdefault((int(feats.track[s]), start), []).append(s)
        missing = [feats.classes[c] for c, w in self.windows.items() if not w]
        if missing:
            raise EngineError(f"no active stems of class {', '.join(missing)} in the data; "
                              "render more tracks or train on fewer classes")

    def class_word(self, c: int) -> str:
        return CLASS_WORDS[self.f.classes[c]]

    def sample_single(self, c: int, rng: np.random.Generator) -> np.ndarray:
        """Power mel ``(n_frames, n_mels)`` of one active window of class ``c``."""
        s, start = self.windows[c][rng.integers(len(self.windows[c]))]
        return self.f.stem_power(s, start, self.config.n_frames)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        n = self.config.n_frames
        k = int(rng.choice(3, p=self.stem_count_p)) + 1
        first = int(rng.integers(len(self.windows)))
        s0, start = self.windows[first][rng.integers(len(self.windows[first]))]
        chosen = [(s0, start)]
        used = {first}
        partners = [s for s in self.active.get((int(self.f.track[s0]), start), [])
                    if int(self.f.cls[s]) not in used]
        rng.shuffle(partners)
        for s in partners:
            if len(chosen) == k:
                break
            if int(self.f.cls[s]) not in used:
                chosen.append((s, start))
                used.add(int(self.f.cls[s]))
        while len(chosen) < k:
            c = int(rng.choice([c for c in self.windows if c not in used]))
            chosen.append(self.windows[c][rng.integers(len(self.windows[c]))])
            used.add(c)
        gains = 10.0 ** (rng.uniform(-6.0, 6.0, size=len(chosen)) / 10.0)
        power = sum(g * self.f.stem_power(s, st, n) for g, (s, st) in zip(gains, chosen, strict=True))
        words = [self.class_word(int(self.f.cls[s])) for s, _ in chosen]
        rng.shuffle(words)
        templates = (SINGLE_TEMPLATES, PAIR_TEMPLATES, TRIPLE_TEMPLATES)[len(words) - 1]
        caption = templates[rng.integers(len(templates))].format(*words)
        return power, caption

    def batch(self, rng: np.random.Generator, size: int,
              tokenizer: WordTokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """``(mel (B, T, M) in [-1, 1], ids (B, L), mask (B, L), captions)`` with CFG dropout."""
        mels, seqs, captions = [], [], []
        for _ in range(size):
            power, caption = self.sample(rng)
            if rng.random() < CFG_DROPOUT:
                caption = ""
            ids = tokenizer.tokenize(caption)[0]
            if caption and rng.random() < UNK_RATE:
                ids.insert(int(rng.integers(1, len(ids) + 1)), tokenizer.word_to_id["<unk>"])
            mels.append(power)
            seqs.append(ids)
            captions.append(caption)
        mel = power_to_unit(torch.from_numpy(np.stack(mels).astype(np.float32)), self.config.top_db)
        ids, mask = tokenizer.pad(seqs)
        return mel, ids, mask, captions

    def class_profile(self, c: int, rng: np.random.Generator, count: int = 64) -> np.ndarray:
        """Mean over ``count`` single-class windows of the time-averaged model-scale mel ``(n_mels,)``."""
        mels = np.stack([self.sample_single(c, rng) for _ in range(count)])
        unit = power_to_unit(torch.from_numpy(mels), self.config.top_db).numpy()
        return unit.mean(axis=(0, 1))
