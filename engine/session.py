"""Session files: a run's recipe, the view state around it and, optionally, its captured arrays.

A session file is a zip archive (suffix ``.aiba``) holding ``session.json`` (schema-versioned,
human-readable) and, when the captured data is included, ``.npy`` members for the audio, the mel,
the noise schedule and every recorded attention frame. Files are written atomically: to a
temporary file in the destination folder, then ``os.replace``. No Qt here.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic_io import atomic_write
from engine.backends.base import RunResult
from engine.types import EngineError, GenerationRequest, MelSpec, Site

SESSION_SCHEMA_VERSION = 1
SESSION_SUFFIX = ".aiba"
_JSON_NAME = "session.json"
_FORMAT = "aiba-studio-session"


@dataclass
class Session:
    """Everything needed to reopen a run exactly as it was shown.

    ``request`` is the run recipe; ``head_masks`` maps site name to the heads kept in the
    aggregated view; ``view`` is free-form view state owned by the GUI (selected site, step,
    token, colormap, levels, ...); ``result`` is the captured run, or ``None`` for a recipe only.
    """

    model: str
    device: str
    request: GenerationRequest
    head_masks: dict[str, list[bool]] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)
    result: RunResult | None = None
    saved_at: str = ""


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    """Rebuild a :class:`GenerationRequest` from its ``to_dict`` form (unknown keys are an error)."""
    known = {f.name for f in fields(GenerationRequest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EngineError(f"unknown request fields {unknown}: the session was written by a newer version")
    if "prompt" not in data:
        raise EngineError("the session's request has no prompt: the file is damaged")
    return GenerationRequest(**data)


def _describe(item: Any) -> Any:
    return item.describe() if hasattr(item, "describe") else {"type": type(item).__name__}


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    """The request as JSON-ready data. Live intervention objects (steering, LSAC, ...) are stored
    as their descriptions under ``extras["interventions_recorded"]``: the recipe says what was
    applied, but reopening a session does not re-apply them. Other extras that are not plain data
    are stored as their type name."""
    data = asdict(replace(request, extras={}))
    extras: dict[str, Any] = {}
    for key, value in request.extras.items():
        if key == "interventions":
            extras["interventions_recorded"] = [_describe(iv) for iv in value]
            continue
        try:
            json.dumps(value, default=_json_default)
            extras[key] = value
        except (TypeError, ValueError):
            extras[key] = {"unstored": type(value).__name__}
    data["extras"] = extras
    return data


def save_session(path: str | os.PathLike[str], session: Session, include_arrays: bool = True) -> Path:
    """Write ``session`` to ``path`` atomically; returns the path written.

    With ``include_arrays`` the captured run (audio, mel, frames) travels with the recipe.
    """
    target = Path(path)
    if target.suffix != SESSION_SUFFIX:
        target = target.with_name(target.name + SESSION_SUFFIX)
    if not target.parent.is_dir():
        raise EngineError(f"folder {target.parent} does not exist: choose an existing folder")
    session.saved_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    doc: dict[str, Any] = {
        "format": _FORMAT,
        "schema_version": SESSION_SCHEMA_VERSION,
        "saved_at": session.saved_at,
        "model": session.model,
        "device": session.device,
        "request": request_to_dict(session.request),
        "head_masks": {k: [bool(b) for b in v] for k, v in session.head_masks.items()},
        "view": session.view,
        "result": None,
    }
    arrays: dict[str, np.ndarray] = {}
    if session.result is not None and include_arrays:
        doc["result"], arrays = _result_to_doc(session.result)
    payload = json.dumps(doc, indent=2, sort_keys=True, default=_json_default)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_JSON_NAME, payload)
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                zf.writestr(name, buf.getvalue())

    return atomic_write(target, write)


def load_session(path: str | os.PathLike[str]) -> Session:
    """Read a session file written by :func:`save_session` (any supported schema version)."""
    source = Path(path)
    if not source.is_file():
        raise EngineError(f"no session file at {source}: check the path")
    try:
        with zipfile.ZipFile(source) as zf:
            doc = json.loads(zf.read(_JSON_NAME).decode("utf-8"))
            doc = _migrate(doc, source)
            result = None
            if doc.get("result") is not None:
                result = _result_from_doc(doc["result"], zf)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"{source} is not an AIBA Studio session file ({exc}): open a .aiba file") from exc
    return Session(
        model=str(doc["model"]),
        device=str(doc["device"]),
        request=request_from_dict(doc["request"]),
        head_masks={k: [bool(b) for b in v] for k, v in doc.get("head_masks", {}).items()},
        view=dict(doc.get("view", {})),
        result=result,
        saved_at=str(doc.get("saved_at", "")),
    )


def _migrate(doc: dict[str, Any], source: Path) -> dict[str, Any]:
    """Bring an older schema up to the current one; refuse newer ones."""
    if doc.get("format") != _FORMAT:
        raise EngineError(f"{source} is not an AIBA Studio session file: open a .aiba file")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise EngineError(f"{source} has no valid schema_version: the file is damaged")
    if version > SESSION_SCHEMA_VERSION:
        raise EngineError(
            f"{source} uses session schema {version}, newer than {SESSION_SCHEMA_VERSION}: update AIBA Studio"
        )
    # version 1 is current; future migrations go here, one step at a time.
    return doc


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a session file")


def _result_to_doc(result: RunResult) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {
        "audio.npy": np.asarray(result.audio),
        "sigmas.npy": np.asarray(result.sigmas),
        "timesteps.npy": np.asarray(result.timesteps),
    }
    if result.mel is not None:
        arrays["mel.npy"] = np.asarray(result.mel)
    frame_index = []
    for i, ((step, site), probs) in enumerate(sorted(result.frames.items())):
        name = f"frames/{i:06d}.npy"
        arrays[name] = np.asarray(probs)
        frame_index.append({"step": int(step), "site": site, "member": name})
    doc = {
        "run_id": int(result.run_id),
        "sample_rate": int(result.sample_rate),
        "has_mel": result.mel is not None,
        "mel_spec": result.mel_spec.to_dict() if result.mel_spec is not None else None,
        "tokens": result.tokens,
        "sites": [s.to_dict() for s in result.sites],
        "lattices": {k: list(v) for k, v in result.lattices.items()},
        "frames": frame_index,
        "recipe": result.recipe,
        "frames_dir": result.frames_dir,
        "warnings": list(result.warnings),
        "elapsed_s": float(result.elapsed_s),
    }
    return doc, arrays


def _read_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(name) as fh:
        arr = np.lib.format.read_array(io.BytesIO(fh.read()), allow_pickle=False)
    arr.setflags(write=False)
    return arr


def _result_from_doc(doc: dict[str, Any], zf: zipfile.ZipFile) -> RunResult:
    sites = []
    for s in doc["sites"]:
        lattice = tuple(s["lattice"]) if s.get("lattice") is not None else None
        sites.append(Site(**{**s, "lattice": lattice}))
    frames = {(int(f["step"]), str(f["site"])): _read_array(zf, f["member"]) for f in doc["frames"]}
    return RunResult(
        run_id=int(doc["run_id"]),
        audio=_read_array(zf, "audio.npy"),
        sample_rate=int(doc["sample_rate"]),
        mel=_read_array(zf, "mel.npy") if doc.get("has_mel") else None,
        mel_spec=MelSpec(**doc["mel_spec"]) if doc.get("mel_spec") else None,
        tokens={k: list(v) for k, v in doc["tokens"].items()},
        sites=sites,
        lattices={k: (int(v[0]), int(v[1])) for k, v in doc["lattices"].items()},
        frames=frames,
        sigmas=_read_array(zf, "sigmas.npy"),
        timesteps=_read_array(zf, "timesteps.npy"),
        recipe=dict(doc["recipe"]),
        frames_dir=doc.get("frames_dir"),
        warnings=list(doc.get("warnings", [])),
        elapsed_s=float(doc.get("elapsed_s", 0.0)),
    )
