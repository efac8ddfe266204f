"""The protocol every model family implements, and the result of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.types import CancelToken, GenerationRequest, MelSpec, RunObserver, Site


@dataclass
class RunResult:
    """What a finished run hands back.

    ``frames`` maps ``(step, site)`` to the recorded ``(H, Q, K)`` float16 array (cond half);
    when frames were streamed to disk, ``frames_dir`` names the folder and ``frames`` holds
    only what fitted the budget. ``mel`` is ``(T_mel, n_mels)``, low frequency first, in the
    model's own scale (dB or normalised); ``tokens`` maps each context to the prompt's token
    strings in key order; ``lattices`` maps site to its query lattice ``(T_l, F_l)``.
    ``sigmas`` has one noise level per denoising step (for σ-late weighting).
    """

    run_id: int
    audio: np.ndarray
    sample_rate: int
    mel: np.ndarray | None
    mel_spec: MelSpec | None
    tokens: dict[str, list[str]]
    sites: list[Site]
    lattices: dict[str, tuple[int, int]]
    frames: dict[tuple[int, str], np.ndarray]
    sigmas: np.ndarray
    timesteps: np.ndarray
    recipe: dict[str, Any]
    frames_dir: str | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    # family extras: "sink_mass" {(step, site): (Q,) float32 probability on padded keys, head
    # mean} and "pad_keys" {context: (K,) bool} for Stable Audio; empty when not applicable
    aux: dict[str, Any] = field(default_factory=dict)


class PipelineHolder:
    """What every backend that wraps a diffusers pipeline records about it: the pipeline, where it
    came from and how it runs. Its own progress bar is switched off (progress goes through the
    observer)."""

    def __init__(self, pipe: Any, model_id: str, device: str = "cpu", dtype: str = "float32",
                 revision: str | None = None, warnings: list[str] | None = None) -> None:
        self.pipe = pipe
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.revision = revision
        self.warnings: list[str] = list(warnings or [])
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)


class Backend(Protocol):
    """A loaded model family. Implementations live in ``engine/backends/<family>.py``."""

    family: str  # "embedded", "audioldm2", "stable_audio"
    model_id: str  # hub id, folder or embedded name
    device: str

    def sites(self) -> list[Site]:
        """Every attention module of the denoiser (cross and self), in call order."""
        ...

    def tokens(self, prompt: str) -> dict[str, list[str]]:
        """The prompt's token strings per context, in the order the keys see them."""
        ...

    def mel_spec(self) -> MelSpec:
        """The model's mel definition (for the Hz axis)."""
        ...

    def generate(
        self,
        request: GenerationRequest,
        observer: RunObserver | None = None,
        cancel: CancelToken | None = None,
        run_id: int = 0,
    ) -> RunResult:
        """Generate audio, recording attention as the request asks; removes all probes after."""
        ...
