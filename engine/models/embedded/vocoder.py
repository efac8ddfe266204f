"""Griffin-Lim vocoder for the embedded model: mel power -> linear magnitude -> audio.

The linear spectrum is recovered from the mel by non-negative least squares (multiplicative
updates started from the filterbank transpose), then the phase by fast Griffin-Lim (momentum).
Quality is that of Griffin-Lim from 64 mel bands: recognisable pitch and timbre, phasey texture.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.models.embedded.melspec import MelConfig, unit_to_power


def mel_to_linear_power(mel_power: torch.Tensor, fb: torch.Tensor, n_iter: int = 40) -> torch.Tensor:
    """Non-negative ``S`` with ``S @ fb.T ≈ mel_power``; ``mel_power (T, M)``, ``fb (M, F)`` -> ``(T, F)``."""
    gram = fb.T @ fb  # (F, F)
    target = mel_power @ fb  # (T, F)
    norm = fb.sum(dim=0).clamp_min(1e-8)  # (F,)
    spec = (target / norm**2).clamp_min(1e-12) + 1e-10
    for _ in range(n_iter):
        spec = spec * target / (spec @ gram + 1e-12)
    return spec


def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop_length: int, n_iter: int = 32,
                momentum: float = 0.99, length: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013); ``magnitude (F, T+1)`` -> audio ``(N,)``.

    Centred STFT framing: ``N = T * hop_length`` samples have ``T + 1`` frames.
    """
    window = torch.hann_window(n_fft)
    phase = torch.rand(magnitude.shape, generator=generator) * 2 * np.pi
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous: torch.Tensor | None = None
    for _ in range(n_iter):
        audio = torch.istft(magnitude * angles, n_fft, hop_length, window=window, length=length)
        rebuilt = torch.stft(audio, n_fft, hop_length, window=window, return_complex=True)
        accelerated = rebuilt + momentum * (rebuilt - previous) if previous is not None else rebuilt
        angles = accelerated / accelerated.abs().clamp_min(1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft, hop_length, window=window, length=length)


def vocode(mel_unit: np.ndarray | torch.Tensor, config: MelConfig, n_iter: int = 32,
           seed: int = 0) -> np.ndarray:
    """Audio (float32, peak 0.9) from a model-scale mel ``(T, n_mels)`` in ``[-1, 1]``."""
    x = torch.as_tensor(np.asarray(mel_unit), dtype=torch.float32)
    fb = torch.from_numpy(config.filterbank())
    linear = mel_to_linear_power(unit_to_power(x, config.top_db), fb)
    linear = torch.cat([linear, linear[-1:]], dim=0)  # centred framing: T frames -> T + 1
    length = x.shape[0] * config.hop_length
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        audio = griffin_lim(linear.sqrt().T.contiguous(), config.n_fft, config.hop_length, n_iter,
                            length=length, generator=generator)
    audio = audio.numpy().astype(np.float32)
    peak = float(np.abs(audio).max())
    return audio * (0.9 / peak) if peak > 0 else audio
