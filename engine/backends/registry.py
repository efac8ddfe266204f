"""``load_backend``: turn a model name (embedded, hub id, local folder) into a loaded backend.

Resolution:

* ``"embedded"`` (default): the embedded model's backend
  (``engine.models.embedded.backend.load_embedded_backend(device, dtype)``). While that module
  or its trained weights are missing, a tiny random AudioLDM2 saved under the cache folder is
  used instead, with a warning
  on the backend (``backend.warnings``, repeated in every ``RunResult.warnings``).
* ``"tiny:audioldm2"`` / ``"tiny:stable_audio"``: the tiny random pipelines, built in memory.
* ``"random:audioldm2"`` / ``"random:stable_audio"``: the published-size pipelines with random
  weights (:mod:`engine.backends.published`), built in memory (~4.3 / ~4.9 GB in float32).
* a local folder written by ``save_pretrained``: the family comes from ``model_index.json``'s
  ``_class_name``.
* a hub id (``cvssp/audioldm2``, ``cvssp/audioldm2-music``, ``cvssp/audioldm2-large``,
  ``stabilityai/stable-audio-open-1.0``, ...): the family comes from the id, or from the cached
  ``model_index.json``. Loaded with diffusers ``from_pretrained`` (``local_files_only`` when
  ``HF_HUB_OFFLINE`` is set). An id with no snapshot in the local Hugging Face cache gives a
  one-line :class:`EngineError` at once, before torch or diffusers are imported and before any
  network access.

torch, diffusers and the tiny pipelines are imported inside the functions that need them, so
importing this module and failing on a missing hub id stay fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from engine.types import EngineError

FAMILY_BY_CLASS = {"AudioLDM2Pipeline": "audioldm2", "StableAudioPipeline": "stable_audio",
                   "AceStepPipeline": "ace_step", "StableAudio3Pipeline": "stable_audio_3",
                   "LongCatAudioDiTPipeline": "longcat"}
EMBEDDED = "embedded"
# components a pipeline recreates with its default when its folder is missing
REBUILT_COMPONENTS = {"LongCatAudioDiTPipeline": ("scheduler",)}


def cache_dir() -> Path:
    """Where AIBA Studio keeps generated models: :func:`engine.paths.cache_dir`
    (``$AIBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/aiba-studio``)."""
    from engine.paths import cache_dir as user_cache_dir

    return user_cache_dir()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_path(model_id: str) -> Path:
    """The folder the Hugging Face cache uses for ``model_id``."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))


def hub_snapshot_cached(model_id: str) -> bool:
    """Whether the local Hugging Face cache holds a snapshot of ``model_id`` with a
    ``model_index.json`` (a file check only: no network, no torch)."""
    snapshots = hub_cache_path(model_id) / "snapshots"
    return snapshots.is_dir() and any(snapshots.glob("*/model_index.json"))


def how_to_get(model_id: str) -> str:
    """The one-line advice for a hub id whose weights are missing."""
    where = hub_cache_path(model_id)
    return (f"download it with `hf download {model_id}` or, in Python, "
            f"`huggingface_hub.snapshot_download({model_id!r})` (on another machine, then copy "
            f"{where} to the same place here), or pass a local folder saved with save_pretrained")


def require_hub_cache(model_id: str) -> None:
    """Raise the missing-model :class:`EngineError` when ``model_id`` is not in the local cache."""
    if hub_snapshot_cached(model_id):
        return
    where = hub_cache_path(model_id)
    known = family_of_hub_id(model_id) is not None
    what = (f"weights for {model_id!r} are not" if known else
            f"model {model_id!r} is not a known AudioLDM2/Stable Audio id and is not")
    raise EngineError(f"{what} in the Hugging Face cache ({where}); {how_to_get(model_id)}")


def family_of_folder(folder: Path) -> str:
    index = folder / "model_index.json"
    if not index.is_file():
        raise EngineError(f"{folder} has no model_index.json; pass a folder written by save_pretrained")
    from engine.loaders import Checker, read_json

    check = Checker(f"model folder {folder}", "pass a folder written by save_pretrained or download it again")
    class_name = check.table(read_json(index, check), "model_index.json").get("_class_name", "")
    if not isinstance(class_name, str) or class_name not in FAMILY_BY_CLASS:
        raise EngineError(
            f"{folder} holds a {str(class_name)[:80] or 'unknown'} pipeline; supported: {', '.join(FAMILY_BY_CLASS)}"
        )
    return FAMILY_BY_CLASS[class_name]


def check_folder(folder: Path) -> None:
    """Check a pipeline folder before diffusers reads it: ``model_index.json`` is a table whose
    components (``name: [library, class]``) are non-empty sub-folders, and every component's
    ``.safetensors`` header is sound and within :func:`engine.loaders.max_array_bytes` (no tensor
    data is read). Damaged configs inside a component are left to diffusers (one line, see
    :func:`load_folder`)."""
    from engine.loaders import Checker, read_json, safetensors_header

    check = Checker(f"model folder {folder}", "pass a folder written by save_pretrained or download it again")
    index = check.table(read_json(folder / "model_index.json", check), "model_index.json")
    components = {k: v for k, v in index.items() if not k.startswith("_")}
    if not components:
        raise check.fail("has a model_index.json that lists no components")
    for name, spec in components.items():
        if not isinstance(spec, list) or len(spec) != 2:
            raise check.fail(f"has a model_index.json entry {name!r:.60} that is not [library, class]")
        if spec[0] is None or spec[1] is None:
            continue  # an optional component saved as absent
        sub = folder / name
        if name in REBUILT_COMPONENTS.get(str(index.get("_class_name")), ()) and not sub.exists():
            continue  # the pipeline builds its default (LongCat's save_pretrained skips its scheduler)
        if not sub.is_dir() or not any(sub.iterdir()):
            raise check.fail(f"lacks the {name!r:.60} component folder listed in model_index.json")
    for path in sorted(folder.glob("*/*.safetensors")):
        safetensors_header(path, check)


def family_of_hub_id(model_id: str) -> str | None:
    low = model_id.lower()
    if "audioldm2" in low:
        return "audioldm2"
    if "stable-audio-3" in low or "stable_audio_3" in low:
        return "stable_audio_3"
    if "stable-audio" in low or "stable_audio" in low:
        return "stable_audio"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "model_index.json")
    except Exception:  # noqa: BLE001 - an unusual id; treated as unknown below
        cached = None
    if isinstance(cached, str):
        return family_of_folder(Path(cached).parent)
    return None


def _backend_class(family: str):
    if family == "audioldm2":
        from engine.backends.audioldm2 import AudioLDM2Backend

        return AudioLDM2Backend
    if family == "stable_audio":
        from engine.backends.stable_audio import StableAudioBackend

        return StableAudioBackend
    if family == "ace_step":
        from engine.backends.ace_step import AceStepBackend

        return AceStepBackend
    if family == "stable_audio_3":
        from engine.backends.stable_audio_3 import StableAudio3Backend

        return StableAudio3Backend
    if family == "longcat":
        from engine.backends.generic import GenericBackend

        return GenericBackend
    raise EngineError(f"unknown model family {family!r}; supported: {', '.join(FAMILY_BY_CLASS.values())}")


def _pipeline_class(family: str):
    import diffusers

    if family == "audioldm2":
        return diffusers.AudioLDM2Pipeline
    if family == "stable_audio":
        if diffusers.CosineDPMSolverMultistepScheduler.__module__.endswith("_objects"):
            raise EngineError("Stable Audio needs torchsde: run `pip install torchsde`")
        return diffusers.StableAudioPipeline
    if family == "ace_step":
        return diffusers.AceStepPipeline
    if family == "stable_audio_3":
        return diffusers.StableAudio3Pipeline
    if family == "longcat":
        return diffusers.LongCatAudioDiTPipeline
    raise EngineError(f"unknown model family {family!r}")


def _snapshot_commit(model_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "model_index.json")
    except Exception:  # noqa: BLE001 - the revision is informational only
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def _finish(pipe, device: str, dtype: str):
    """Move to ``device``; cast only when the weights are not in ``dtype`` yet."""
    from engine.device import resolve_dtype

    pipe = pipe.to(device)
    if pipe.dtype != resolve_dtype(dtype):
        pipe = pipe.to(dtype=resolve_dtype(dtype))
    return pipe


def load_folder(folder: Path, device: str, dtype: str, model_id: str | None = None):
    from engine.device import resolve_dtype

    family = family_of_folder(folder)
    check_folder(folder)
    cls = _pipeline_class(family)
    try:
        pipe = cls.from_pretrained(str(folder), dtype=resolve_dtype(dtype), local_files_only=True)
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers/transformers/safetensors raise many types on damaged files
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise EngineError(f"cannot load the pipeline in {folder} ({type(exc).__name__}: {first}): "
                          "pass a folder written by save_pretrained or download it again") from exc
    return _backend_class(family)(_finish(pipe, device, dtype), model_id or str(folder), device, dtype)


def load_hub(model_id: str, device: str, dtype: str):
    from engine.device import resolve_dtype

    require_hub_cache(model_id)
    offline = hub_offline()
    family = family_of_hub_id(model_id)
    where = hub_cache_path(model_id)
    how = how_to_get(model_id)
    if family is None:
        raise EngineError(f"{where} holds no AudioLDM2/Stable Audio pipeline for {model_id!r}; {how}")
    cls = _pipeline_class(family)
    try:
        pipe = cls.from_pretrained(model_id, dtype=resolve_dtype(dtype), local_files_only=offline)
    except (OSError, ValueError) as exc:
        state = "offline (HF_HUB_OFFLINE is set)" if offline else "not downloadable here"
        raise EngineError(
            f"weights for {model_id!r} are incomplete in the Hugging Face cache ({where}) and the "
            f"hub is {state}; {how}"
        ) from exc
    return _backend_class(family)(_finish(pipe, device, dtype), model_id, device, dtype,
                                  revision=_snapshot_commit(model_id))


def _embedded_fallback(device: str, dtype: str, reason: str):
    from engine.backends.tiny import save_tiny

    folder = cache_dir() / "tiny-audioldm2"
    if not (folder / "model_index.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tiny-audioldm2-", dir=folder.parent))
        save_tiny("audioldm2", tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    backend = load_folder(folder, device, dtype, model_id=EMBEDDED)
    backend.warnings.append(
        f"the embedded model is not installed yet ({reason}); using a tiny random-weight "
        f"AudioLDM2 from {folder} (its attention and audio carry no meaning)"
    )
    return backend


def _is_hub_id(model: str) -> bool:
    """``owner/name`` (one slash, not a path)."""
    return model.count("/") == 1 and not model.startswith((".", "/", "~"))


def _no_loading_bars() -> None:
    """diffusers and transformers draw loading bars on the terminal (also under the GUI); progress
    of a run is reported through the engine's observer instead."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_backend(model: str = EMBEDDED, device: str = "cpu", dtype: str = "float32"):
    """Load ``model`` (``"embedded"``, ``"tiny:<family>"``, a folder or a hub id) as a backend."""
    if not isinstance(model, str) or not model.strip():
        raise EngineError("model must be 'embedded', a hub id like cvssp/audioldm2, or a folder")
    model = model.strip()
    if _is_hub_id(model) and not Path(model).expanduser().exists():
        require_hub_cache(model)  # fails in milliseconds, before torch is imported
    _no_loading_bars()
    from engine.backends.tiny import TINY_FAMILIES, build_tiny
    from engine.device import resolve_device, resolve_dtype

    device = resolve_device(device)
    resolve_dtype(dtype)
    if model == EMBEDDED:
        try:
            from engine.models.embedded.backend import load_embedded_backend

            return load_embedded_backend(device=device, dtype=dtype)
        except (ImportError, EngineError) as exc:
            return _embedded_fallback(device, dtype, reason=str(exc))
    if model.startswith("tiny:"):
        family = model.split(":", 1)[1]
        if family not in TINY_FAMILIES:
            raise EngineError(f"unknown tiny model {model!r}; use one of "
                              + ", ".join(f"tiny:{f}" for f in TINY_FAMILIES))
        pipe = build_tiny(family)
        return _backend_class(family)(_finish(pipe, device, dtype), model, device, dtype)
    if model.startswith("random:"):  # published size, random weights (engine.backends.published)
        from engine.backends.published import PUBLISHED_FAMILIES, build_published

        family = model.split(":", 1)[1]
        if family not in PUBLISHED_FAMILIES:
            raise EngineError(f"unknown random model {model!r}; use random:audioldm2 or random:stable_audio")
        return _backend_class(family)(_finish(build_published(family), device, dtype), model, device, dtype)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EngineError(f"{path} is a file; pass the folder written by save_pretrained")
        return load_folder(path, device, dtype)
    if _is_hub_id(model):
        return load_hub(model, device, dtype)
    raise EngineError(f"no folder {path} and {model!r} is not a hub id (owner/name); check the name")
