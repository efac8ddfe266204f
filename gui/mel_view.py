"""The mel the player draws under a waveform: the model's own mel of a run or clip, else the
log-mel of the audio itself with the model's mel definition (no Qt here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.melscale import mel_spectrogram, power_to_db
from engine.types import MelSpec

TOP_DB = 80.0  # the computed log-mel's floor below its peak


@dataclass(frozen=True)
class MelView:
    """``mel``: ``(frames, bands)`` in the model's scale (None: compute it from the audio);
    ``spec``: the model's mel definition (band centres for the Hz axis, and the computation)."""

    mel: np.ndarray | None
    spec: MelSpec | None

    def image(self, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """``(frames, bands)`` float32 to draw, or None when there is neither a mel nor a definition
        (or no audio)."""
        if self.mel is not None:
            return np.asarray(self.mel, dtype=np.float32)
        if self.spec is None or np.asarray(audio).size == 0:
            return None
        power = mel_spectrogram(audio, self.spec, sample_rate)
        if power.shape[0] == 0:
            return None
        return power_to_db(power, top_db=TOP_DB).astype(np.float32)
