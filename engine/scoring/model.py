"""The instrument scorer's network: a log-mel CNN with one sigmoid output per instrument class.

Input: mono audio at any rate, resampled to 16 kHz, turned into 64 Slaney mel bands (n_fft 1024,
hop 256: the embedded model's own mel definition) in dB relative to the clip's maximum, floored at
−80 dB and scaled to [−1, 1]; so loudness does not matter. Four conv blocks (3 × 3 conv, batch norm,
ReLU, 2 × 2 max-pool) give a per-frame embedding (mean over frequency of the last block; one frame
is 16 hops = 256 ms); the clip embedding is the mean over frames, and a linear layer gives one logit
per class. The outputs are independent (multi-label), so a mix can score high on several classes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.analysis.melscale import mel_filterbank, resample_audio
from engine.types import EngineError

CLASSES: tuple[str, ...] = ("Bass", "Drums", "Guitar", "Piano", "Strings", "Organ")
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class ScorerConfig:
    """Front end and network sizes (written to ``config.json`` beside the weights)."""

    classes: tuple[str, ...] = CLASSES
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    top_db: float = 80.0
    channels: tuple[int, ...] = (16, 32, 64, 128)
    extra: dict[str, Any] = field(default_factory=dict)  # training facts, informative only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["channels"] = list(self.classes), list(self.channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScorerConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("classes", "channels"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


class LogMel(nn.Module):
    """Audio ``(B, N)`` at the config's rate → power mel ``(B, T, n_mels)``."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, 0.0, config.sample_rate / 2)
        self.register_buffer("fb", torch.from_numpy(np.asarray(fb, np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        if audio.shape[-1] < c.n_fft:
            audio = nn.functional.pad(audio, (0, c.n_fft - audio.shape[-1]))
        spec = torch.stft(audio, c.n_fft, c.hop_length, window=self.window, center=False, return_complex=True)
        power = spec.real**2 + spec.imag**2  # (B, F, T)
        return torch.einsum("bft,mf->btm", power, self.fb)


def power_to_input(power: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    """Power mel ``(B, T, M)`` → network input in [−1, 1]: dB re the clip's max, floored at −top_db."""
    db = 10.0 * torch.log10(power.clamp_min(1e-10))
    db = db - db.amax(dim=(-2, -1), keepdim=True)
    return (db.clamp_min(-top_db) / (top_db / 2) + 1.0).unsqueeze(1)


class InstrumentNet(nn.Module):
    """The CNN on model-scale log-mels ``(B, 1, T, M)``."""

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        blocks, cin = [], 1
        for cout in config.channels:
            blocks.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(cin, len(config.classes))

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each block, ``(B, C_l, T_l, M_l)``."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    @staticmethod
    def frame_embeddings(last: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``(B, T_L, C)``: the last block's activations, mean over frequency."""
        return last.mean(dim=3).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)``."""
        return self.head(self.frame_embeddings(self.layers(x)[-1]).mean(dim=1))


class InstrumentScorerModel:
    """The shipped scorer: front end + network, on the CPU, in eval mode."""

    def __init__(self, config: ScorerConfig, net: InstrumentNet | None = None) -> None:
        self.config = config
        self.front = LogMel(config)
        self.net = (net or InstrumentNet(config)).eval()

    @classmethod
    def load(cls, folder: str | Path) -> InstrumentScorerModel:
        """Read ``config.json`` and ``model.safetensors`` from ``folder``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder).expanduser()
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise EngineError(f"{folder} is not an instrument-scorer folder (needs {CONFIG} and {WEIGHTS}); "
                              "train one with `python main.py train-scorer --out DIR`")
        try:
            config = ScorerConfig.from_dict(json.loads((folder / CONFIG).read_text()))
            net = InstrumentNet(config)
            net.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as exc:
            raise EngineError(f"cannot load the instrument scorer from {folder}: {str(exc).splitlines()[0]}; "
                              "retrain it with `python main.py train-scorer`") from exc
        return cls(config, net)

    def save(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=1))

    def inputs(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Network input ``(1, 1, T, M)`` of one mono clip at ``sample_rate``."""
        x = np.asarray(audio, dtype=np.float64)
        if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
            raise EngineError("the instrument scorer needs a non-empty, finite mono clip")
        x = resample_audio(x, int(sample_rate), self.config.sample_rate).astype(np.float32)
        with torch.no_grad():
            return power_to_input(self.front(torch.from_numpy(x)[None]), self.config.top_db)

    def probabilities(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Per-class probability (sigmoid) that the clip contains that instrument."""
        with torch.no_grad():
            p = torch.sigmoid(self.net(self.inputs(audio, sample_rate)))[0]
        return {c: float(v) for c, v in zip(self.config.classes, p.tolist(), strict=True)}

    def activations(self, audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """Each block's activations ``(C_l, T_l, M_l)`` for one clip."""
        with torch.no_grad():
            return [a[0].numpy() for a in self.net.layers(self.inputs(audio, sample_rate))]

    def frame_embeddings(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Per-frame embeddings ``(T_L, C)`` (256 ms frames) of one clip."""
        with torch.no_grad():
            last = self.net.layers(self.inputs(audio, sample_rate))[-1]
            return self.net.frame_embeddings(last)[0].numpy()


def default_scorer_dir() -> Path:
    """The shipped scorer: ``resources/models/aiba-instrument-scorer``."""
    from engine.paths import resources_dir

    return resources_dir() / "models" / "aiba-instrument-scorer"
