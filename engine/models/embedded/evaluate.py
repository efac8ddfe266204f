"""Quality checks of the embedded model against held-out rendered stems.

1. **Generated timbre**: per class, the mean frequency profile (time- and sample-averaged
   model-scale mel) of generations for the class word is correlated (Pearson) with every class's
   real profile (held-out single-stem windows); the class should match its own profile best.
   Also with "rel" profiles (the across-class mean profile subtracted from both sides).
2. **Cross-attention bands**: per class word, the layer- and step-aggregated (mean) cross-attention
   map of that token (via :func:`engine.analysis.aggregate.aggregate_run` on the frames the
   backend records) is averaged over time into a 64-bin profile and compared (Pearson) with the
   class's data-driven band template (:func:`engine.analysis.templates.frequency_profile` of
   held-out stems); the same is done for the same architecture with untrained (seeded) weights.
3. **Text use**: the clean-mel (x0) error of held-out single-class clips noised to ``t``, under each
   class caption and the empty one: is the correct caption's error the lowest, and by how much is
   it below the empty caption's?
4. **Griffin-Lim**: correlation of the generated mel with the mel re-computed from its audio;
   and of real mels with the mel of their own Griffin-Lim resynthesis.

``python -m engine.models.embedded.evaluate MODEL_DIR DATA_DIR [--samples N]`` writes
``evaluation.json`` into ``MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from engine.analysis.aggregate import aggregate_run
from engine.analysis.metrics import pearson
from engine.analysis.templates import frequency_profile
from engine.models.embedded.dataset import ClipSampler, extract_features, list_stems
from engine.models.embedded.melspec import MelTransform, power_to_unit
from engine.models.embedded.pipeline import (
    EmbeddedPipeline,
    default_train_scheduler,
    pack_mel,
    with_coord,
)
from engine.models.embedded.textenc import CLASS_WORDS
from engine.models.embedded.train import held_out_tracks
from engine.models.embedded.vocoder import vocode
from engine.types import GenerationRequest


def mel_of_audio(audio: np.ndarray, pipe: EmbeddedPipeline, n_frames: int) -> np.ndarray:
    """Model-scale mel ``(n_frames, n_mels)`` of ``audio``."""
    with torch.no_grad():
        power = MelTransform(pipe.mel_config)(torch.from_numpy(np.asarray(audio, np.float32)))
    return power_to_unit(power[:n_frames], pipe.mel_config.top_db).numpy()


def _rel(profiles: np.ndarray) -> np.ndarray:
    return profiles - profiles.mean(axis=0, keepdims=True)


def _match(gen: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    r = np.array([[pearson(g, x) for x in ref] for g in gen])
    return {"r": np.round(r, 3).tolist(), "best": [int(i) for i in r.argmax(axis=1)],
            "own_r": [round(float(r[i, i]), 3) for i in range(len(r))],
            "matched": int(sum(int(r[i].argmax()) == i for i in range(len(r))))}


def band_templates(data_dir: str | Path, pipe: EmbeddedPipeline, classes: list[str],
                   per_class: int = 12) -> np.ndarray:
    """``(C, n_mels)`` mean data-driven band template of held-out stems of each class."""
    stems = list_stems(data_dir, tuple(classes))
    held_tracks = held_out_tracks(max(t for t, _, _ in stems) + 1)
    spec = pipe.mel_config.mel_spec()
    out = []
    for c in classes:
        held = [w for t, w, k in stems if k == c and t in held_tracks]
        profs = []
        for wav in held[:per_class]:
            audio, sr = sf.read(str(wav), dtype="float32")
            if np.abs(audio).max() > 0:
                profs.append(frequency_profile(audio, sr, spec, n_bins=spec.n_mels))
        out.append(np.mean(profs, axis=0))
    return np.array(out)


def text_use(pipe: EmbeddedPipeline, sampler: ClipSampler, classes: list[str], seed: int,
             timesteps: tuple[int, ...] = (200, 500, 800), clips: int = 8) -> dict[str, Any]:
    """Per ``t``: classes whose own caption gives the lowest x0 error, and each class's error gain
    (%) over the empty caption. Works for ε- and v-prediction models."""
    sched = default_train_scheduler(pipe.scheduler.config.prediction_type)
    rng = np.random.default_rng(seed)
    words = [CLASS_WORDS[c] for c in classes]
    out: dict[str, Any] = {}
    for t_val in timesteps:
        err = np.zeros((len(classes), len(classes) + 1))
        for c in range(len(classes)):
            mel = power_to_unit(torch.from_numpy(np.stack([sampler.sample_single(c, rng) for _ in range(clips)])),
                                pipe.mel_config.top_db)
            x0 = pack_mel(mel)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + c))
            t = torch.full((clips,), t_val)
            x_t = sched.add_noise(x0, noise, t)
            a = sched.alphas_cumprod[t_val]
            for j, caption in enumerate([*words, ""]):
                emb, mask, _, _ = pipe.encode([caption] * clips)
                with torch.no_grad():
                    pred = pipe.unet(with_coord(x_t), t, encoder_hidden_states=emb,
                                     encoder_attention_mask=mask).sample
                if sched.config.prediction_type == "v_prediction":
                    x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * pred
                else:
                    x0_hat = (x_t - (1 - a).sqrt() * pred) / a.sqrt()
                err[c, j] = float(((x0_hat - x0) ** 2).mean())
        own = np.diag(err[:, :-1])
        out[str(t_val)] = {"own_caption_lowest": int(sum(int(err[c, :-1].argmin()) == c for c in range(len(classes)))),
                           "gain_over_empty_pct": np.round(100 * (1 - own / err[:, -1]), 2).tolist()}
    return out


def attention_profiles(pipe: EmbeddedPipeline, classes: list[str], samples: int, steps: int,
                       guidance: float, duration: float) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Per class: token attention profile ``(n_mels,)``, generated mel profile, run facts."""
    from engine.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(pipe)
    att, gen, runs = [], [], []
    for c in classes:
        word = CLASS_WORDS[c]
        a_prof, g_prof = [], []
        for seed in range(samples):
            t0 = time.perf_counter()
            res = backend.generate(GenerationRequest(prompt=word, seed=seed, steps=steps,
                                                     guidance=guidance, duration=duration))
            elapsed = time.perf_counter() - t0
            agg = aggregate_run(res, "text", target=(res.mel.shape[0], pipe.mel_config.n_mels))
            a_prof.append(agg.maps[agg.tokens.index(word)].mean(axis=0))
            g_prof.append(res.mel.mean(axis=0))
            remel = mel_of_audio(res.audio, pipe, res.mel.shape[0])
            runs.append({"class": c, "seed": seed, "seconds": round(elapsed, 3),
                         "griffin_lim_r": round(pearson(res.mel, remel), 4),
                         "bos_mass": round(float(agg.maps[0].mean()), 4)})
        att.append(np.mean(a_prof, axis=0))
        gen.append(np.mean(g_prof, axis=0))
    return np.array(att), np.array(gen), runs


def evaluate(model_dir: str | Path, data_dir: str | Path, samples: int = 4, steps: int = 25,
             guidance: float = 3.0, duration: float = 4.096, seed: int = 0,
             report_name: str = "evaluation.json") -> dict[str, Any]:
    """Run all checks; returns the report (also written to ``model_dir/report_name``)."""
    torch.manual_seed(seed)
    pipe = EmbeddedPipeline.from_pretrained(model_dir)
    classes = list(pipe.info.get("classes") or [])
    cfg = pipe.mel_config
    feats = extract_features(data_dir, cfg, tuple(classes), cache_dir=Path(model_dir) / "work" / "cache")
    n_tracks = int(feats.track.max()) + 1
    held = ClipSampler(feats, cfg, held_out_tracks(n_tracks))
    rng = np.random.default_rng(seed)
    real = np.array([held.class_profile(i, rng, 64) for i in range(len(classes))])
    templates = band_templates(data_dir, pipe, classes)

    att, gen, runs = attention_profiles(pipe, classes, samples, steps, guidance, duration)
    untrained = EmbeddedPipeline.build(cfg, pipe.tokenizer, seed=seed,
                                       prediction_type=pipe.scheduler.config.prediction_type,
                                       text_layers=pipe.text_encoder.config.n_layers)
    att0, _, _ = attention_profiles(untrained, classes, max(1, samples // 2), steps, guidance, duration)

    gl_real = []
    for i in range(len(classes)):
        mel = power_to_unit(torch.from_numpy(held.sample_single(i, rng)), cfg.top_db).numpy()
        gl_real.append(pearson(mel, mel_of_audio(vocode(mel, cfg), pipe, mel.shape[0])))

    use = text_use(pipe, held, classes, seed)
    quarter = cfg.n_mels // 4
    bass = classes.index("Bass") if "Bass" in classes else None
    report = {
        "classes": classes, "samples_per_class": samples, "steps": steps, "guidance": guidance,
        "generated_vs_real_profile": _match(gen, real),
        "generated_vs_real_profile_rel": _match(_rel(gen), _rel(real)),
        "attention_vs_band_template": {
            "trained_r": [round(pearson(a, t), 3) for a, t in zip(att, templates, strict=True)],
            "untrained_r": [round(pearson(a, t), 3) for a, t in zip(att0, templates, strict=True)],
            "trained_vs_real_db_profile_r": [round(pearson(a, t), 3) for a, t in zip(att, real, strict=True)],
            "untrained_vs_real_db_profile_r": [round(pearson(a, t), 3) for a, t in zip(att0, real, strict=True)],
            "trained_match_rel": _match(_rel(att), _rel(templates)),
            "untrained_match_rel": _match(_rel(att0), _rel(templates)),
            "argmax_bin_trained": [int(a.argmax()) for a in att],
            "argmax_bin_untrained": [int(a.argmax()) for a in att0],
            "argmax_bin_template": [int(t.argmax()) for t in templates],
            "modulation_depth_trained": [round(float((a.max() - a.min()) / a.mean()), 3) for a in att],
            "modulation_depth_untrained": [round(float((a.max() - a.min()) / a.mean()), 3) for a in att0],
        },
        "bass_attention_peak_bin": int(att[bass].argmax()) if bass is not None else None,
        "bass_peak_in_lowest_quarter": bool(att[bass].argmax() < quarter) if bass is not None else None,
        "text_use": use,
        "griffin_lim_r_generated_mean": round(float(np.mean([r["griffin_lim_r"] for r in runs])), 4),
        "griffin_lim_r_real_mean": round(float(np.mean(gl_real)), 4),
        "generation_seconds_with_capture_median": round(float(np.median([r["seconds"] for r in runs])), 3),
        "runs": runs,
        "profiles": {"attention_trained": np.round(att, 5).tolist(),
                     "attention_untrained": np.round(att0, 5).tolist(),
                     "band_template": np.round(templates, 5).tolist(),
                     "generated_mel": np.round(gen, 4).tolist(), "real_mel": np.round(real, 4).tolist()},
    }
    (Path(model_dir) / report_name).write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--report", default="evaluation.json", help="file name inside MODEL_DIR")
    args = parser.parse_args(argv)
    rep = evaluate(args.model_dir, args.data_dir, args.samples, args.steps, args.guidance,
                   report_name=args.report)
    att = rep["attention_vs_band_template"]
    print(json.dumps({k: rep[k] for k in ("bass_attention_peak_bin", "bass_peak_in_lowest_quarter",
                                          "griffin_lim_r_generated_mean", "griffin_lim_r_real_mean",
                                          "generation_seconds_with_capture_median")}, indent=1))
    print("generated profile matched:", rep["generated_vs_real_profile"]["matched"], "/", len(rep["classes"]),
          "rel:", rep["generated_vs_real_profile_rel"]["matched"])
    print("attention r trained:", att["trained_r"], "untrained:", att["untrained_r"])
    print("own caption lowest x0 error (per t):", {t: u["own_caption_lowest"] for t, u in rep["text_use"].items()})


if __name__ == "__main__":
    main()
