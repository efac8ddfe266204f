"""Audio–text similarity for patching impact (TADA Eq. 9) and steering alignment.

Every scorer has a ``name`` and reports it with each number it produces.

* :class:`InstrumentScorer` (``"instrument:<folder>"``, the default): the probability that the
  audio contains the concept instrument, from the instrument classifier shipped in
  ``resources/models/aiba-instrument-scorer`` (:mod:`engine.scoring`; Bass, Drums, Guitar, Piano,
  Strings, Organ). It also gives the embeddings and layer activations of TADA's preservation
  measures (:mod:`engine.scoring.distances`).
* :class:`ClapScorer` (``"clap:<folder>"``): cosine similarity of CLAP audio and text
  embeddings, with a local CLAP checkpoint folder loaded through transformers (``ClapModel`` +
  ``ClapProcessor``; nothing is downloaded).
* :class:`BandTemplateScorer` (``"band-template"``): Pearson correlation
  between the audio's mel frequency profile (:func:`engine.analysis.templates.frequency_profile`,
  64 Slaney bands up to the audio's Nyquist frequency) and the concept instrument's knowledge-driven band mask
  (:func:`engine.analysis.templates.band_mask`; the fundamental range where the band covers the
  whole grid, as for drums). It knows only instrument concepts (Slakh
  classes and their common names); tempo, mood or genre need CLAP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engine.analysis.templates import band_mask, band_template, frequency_profile
from engine.types import EngineError, MelSpec

#: Common instrument words → Slakh class names understood by the band templates.
CONCEPT_TEMPLATES: dict[str, str] = {
    "drums": "Drums", "drum": "Drums", "percussion": "Drums", "kick": "Drums",
    "bass": "Bass", "bassline": "Bass",
    "guitar": "Guitar", "guitars": "Guitar",
    "piano": "Piano", "keys": "Piano",
    "strings": "Strings", "violin": "Strings", "cello": "Strings", "orchestra": "Strings",
    "organ": "Organ",
    "brass": "Brass", "trumpet": "Brass", "trombone": "Brass", "horn": "Brass",
    "reed": "Reed", "saxophone": "Reed", "sax": "Reed", "clarinet": "Reed",
    "flute": "Pipe", "pipe": "Pipe",
    "lead": "Synth Lead", "synth lead": "Synth Lead",
    "pad": "Synth Pad", "synth pad": "Synth Pad",
    "mallets": "Chromatic Percussion", "marimba": "Chromatic Percussion",
    "maracas": "Drums",
}


class Scorer(Protocol):
    """``similarity(audio, sample_rate, concept) -> float``; ``name`` says which scorer it is."""

    name: str

    def similarity(self, audio: np.ndarray, sample_rate: int, concept: str) -> float: ...


def template_for(concept: str) -> str:
    """The Slakh class whose band template stands for ``concept`` (an instrument word)."""
    key = concept.strip().lower()
    if key in CONCEPT_TEMPLATES:
        return CONCEPT_TEMPLATES[key]
    try:
        return band_template(concept).name
    except EngineError:
        raise EngineError(
            f"the band-template scorer knows only instrument concepts, not {concept!r}; "
            "pass a local CLAP checkpoint folder (--clap DIR) to score it"
        ) from None


class BandTemplateScorer:
    """Correlation of the audio's mel frequency profile with the concept's band template."""

    name = "band-template"

    def __init__(self, mel_spec: MelSpec | None = None, n_bins: int = 64) -> None:
        self.mel_spec = mel_spec
        self.n_bins = int(n_bins)

    def spec_for(self, sample_rate: int) -> MelSpec:
        """The analysis mel definition: the given one, else 64 Slaney bands 0 Hz–Nyquist with
        10 ms hops (a model's own mel can be too coarse: the tiny AudioLDM2 has 8 bands)."""
        if self.mel_spec is not None:
            return self.mel_spec
        return MelSpec(sample_rate=int(sample_rate), n_fft=1024, hop_length=max(1, int(sample_rate) // 100),
                       n_mels=64, fmin=0.0, fmax=float(sample_rate) / 2)

    def similarity(self, audio: np.ndarray, sample_rate: int, concept: str) -> float:
        spec = self.spec_for(sample_rate)
        name = template_for(concept)
        template = band_mask(name, spec, self.n_bins)
        if template.all():  # a full-band template (Drums) carries no shape: use its fundamentals
            template = band_mask(name, spec, self.n_bins, which="fundamental")
        template = template.astype(np.float64)
        x = np.asarray(audio, dtype=np.float64)
        if x.size == 0 or not np.any(x):
            return 0.0
        profile = frequency_profile(x, sample_rate, spec, self.n_bins)
        if template.std() == 0 or profile.std() == 0:
            return 0.0
        return float(np.corrcoef(profile, template)[0, 1])


class ClapScorer:
    """Cosine similarity of CLAP embeddings from a local checkpoint folder."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise EngineError(f"{folder} is not a CLAP checkpoint folder (no config.json); "
                              "pass a folder saved with ClapModel.save_pretrained")
        try:
            from transformers import ClapModel, ClapProcessor

            self.model = ClapModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
            self.processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load CLAP from {folder}: {str(exc).splitlines()[0]}") from exc
        self.device = device
        self.name = f"clap:{folder.name}"
        self._text: dict[str, np.ndarray] = {}

    def _text_embedding(self, concept: str) -> np.ndarray:
        import torch

        if concept not in self._text:
            inputs = self.processor(text=[concept], return_tensors="pt", padding=True)
            with torch.no_grad():
                emb = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
            emb = getattr(emb, "pooler_output", emb)
            self._text[concept] = emb[0].float().cpu().numpy()
        return self._text[concept]

    def similarity(self, audio: np.ndarray, sample_rate: int, concept: str) -> float:
        import torch

        from engine.analysis.melscale import resample_audio

        sr = int(self.processor.feature_extractor.sampling_rate)
        x = resample_audio(np.asarray(audio, dtype=np.float64), int(sample_rate), sr).astype(np.float32)
        inputs = self.processor(audio=[x], sampling_rate=sr, return_tensors="pt")
        with torch.no_grad():
            emb = self.model.get_audio_features(**{k: v.to(self.device) for k, v in inputs.items()})
        emb = getattr(emb, "pooler_output", emb)
        a = emb[0].float().cpu().numpy()
        t = self._text_embedding(concept)
        return float(a @ t / (np.linalg.norm(a) * np.linalg.norm(t) + 1e-12))


class InstrumentScorer:
    """Concept probability from the shipped instrument classifier (a sigmoid output per class)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        from engine.scoring.model import InstrumentScorerModel, default_scorer_dir

        folder = Path(folder).expanduser() if folder is not None else default_scorer_dir()
        self.model = InstrumentScorerModel.load(folder)
        self.name = f"instrument:{folder.name}"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.config.classes

    def class_for(self, concept: str) -> str:
        """The scorer class that stands for ``concept`` (an instrument word or class name)."""
        try:
            name = template_for(concept)
        except EngineError:
            name = ""
        if name not in self.classes:
            raise EngineError(f"the instrument scorer knows {', '.join(self.classes)}, not {concept!r}; "
                              "use --scorer band-template or --scorer clap:<folder> for other concepts")
        return name

    def check_concept(self, concept: str) -> None:
        """Raise before any generation when ``concept`` cannot be scored."""
        self.class_for(concept)

    def similarity(self, audio: np.ndarray, sample_rate: int, concept: str) -> float:
        name = self.class_for(concept)
        x = np.asarray(audio, dtype=np.float64)
        if x.size == 0 or not np.any(x):
            return 0.0
        return self.model.probabilities(x, sample_rate)[name]

    def embeddings(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Per-frame (256 ms) embeddings ``(frames, 128)`` of a clip."""
        return self.model.frame_embeddings(np.asarray(audio, dtype=np.float64), sample_rate)

    def activations(self, audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """The conv blocks' activations ``(C, T, F)`` of a clip."""
        return self.model.activations(np.asarray(audio, dtype=np.float64), sample_rate)


def load_scorer(spec: str | None = None, mel_spec: MelSpec | None = None, device: str = "cpu") -> Scorer:
    """``None``/``"instrument"`` → the shipped :class:`InstrumentScorer`; ``"instrument:<folder>"``
    → a trained one; ``"band-template"`` → :class:`BandTemplateScorer`; ``"clap:<folder>"`` or a
    folder path → :class:`ClapScorer`."""
    key = "" if spec is None else spec.strip()
    if key.lower() in ("", "instrument"):
        return InstrumentScorer()
    if key.lower().startswith("instrument:"):
        return InstrumentScorer(key.split(":", 1)[1])
    if key.lower() in ("band-template", "band"):
        return BandTemplateScorer(mel_spec)
    folder = spec.split(":", 1)[1] if spec.lower().startswith("clap:") else spec
    return ClapScorer(folder, device=device)
