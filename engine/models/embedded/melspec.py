"""The embedded model's mel definition: Slaney filterbank, power mel, and its [-1, 1] scaling.

Arrays are ``(..., T, n_mels)`` with mel bin 0 the lowest frequency (the engine convention).
The model sees ``x = dB / (top_db / 2) + 1`` where ``dB`` is the power mel in decibels relative to
the clip's own maximum, floored at ``-top_db``; so ``x`` lies in ``[-1, 1]`` and 1 is the loudest
cell of the clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from engine.analysis.melscale import hz_to_mel, mel_filterbank, mel_to_hz
from engine.types import EngineError, MelSpec


def hz_to_mel_slaney(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    return hz_to_mel(hz, "slaney")


def mel_to_hz_slaney(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    return mel_to_hz(mel, "slaney")


def slaney_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular Slaney-normalised (constant area) mel filters, ``(n_mels, n_fft // 2 + 1)``,
    float32: :func:`engine.analysis.melscale.mel_filterbank` (one definition for the engine)."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise EngineError(f"mel range {fmin}-{fmax} Hz must lie inside 0-{sample_rate / 2} Hz")
    return mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, "slaney", "slaney").astype(np.float32)


@dataclass(frozen=True)
class MelConfig:
    """Everything that defines the model's mel plane (saved as ``mel_config.json``)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    mel_scale: str = "slaney"
    n_frames: int = 256  # frames of one training clip (4.096 s at hop 256)
    top_db: float = 80.0
    normalisation: str = "per-clip max-referenced dB floored at -top_db, x = dB / (top_db / 2) + 1"

    def __post_init__(self) -> None:
        if self.mel_scale != "slaney":
            raise EngineError(f"mel_scale {self.mel_scale!r} is not supported here: use 'slaney'")

    def mel_spec(self) -> MelSpec:
        return MelSpec(self.sample_rate, self.n_fft, self.hop_length, self.n_mels, self.fmin, self.fmax,
                       self.mel_scale)

    def filterbank(self) -> np.ndarray:
        return slaney_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)

    def frames_for(self, seconds: float) -> int:
        return int(round(seconds * self.sample_rate / self.hop_length))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class MelTransform:
    """Power mel spectrogram in torch, ``audio (..., N) -> (..., T, n_mels)``."""

    def __init__(self, config: MelConfig) -> None:
        self.config = config
        self.fb = torch.from_numpy(config.filterbank())  # (M, F)
        self.window = torch.hann_window(config.n_fft)

    def power_stft(self, audio: torch.Tensor) -> torch.Tensor:
        """``|STFT|^2`` as ``(..., T, F)`` (centred frames, Hann window)."""
        c = self.config
        lead = audio.shape[:-1]
        spec = torch.stft(audio.reshape(-1, audio.shape[-1]), c.n_fft, c.hop_length, window=self.window,
                          center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return power.transpose(-1, -2).reshape(*lead, power.shape[-1], power.shape[-2])

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        return self.power_stft(audio) @ self.fb.T


def power_to_unit(power: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    """Power mel ``(..., T, M)`` to the model's ``[-1, 1]`` scale (per clip: the last two axes)."""
    db = 10.0 * torch.log10(power.clamp_min(1e-12))
    peak = db.amax(dim=(-2, -1), keepdim=True)
    db = (db - peak).clamp_min(-top_db)
    return db / (top_db / 2.0) + 1.0


def unit_to_power(x: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    """Inverse of :func:`power_to_unit` up to the clip's absolute level (peak power 1)."""
    db = (x.clamp(-1.0, 1.0) - 1.0) * (top_db / 2.0)
    return torch.pow(10.0, db / 10.0)
