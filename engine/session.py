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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from engine.atomic_io import atomic_write
from engine.backends.base import RunResult
from engine.loaders import (
    MAX_JSON_MB,
    MAX_MEMBERS,
    Checker,
    decode_json,
    open_zip,
    read_zip_array,
    read_zip_member,
)
from engine.probe.kept_maps import KeptMaps
from engine.recipe import LIMITS
from engine.types import SITE_KINDS, EngineError, GenerationRequest, MelSpec, Site

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
    recorded: dict[str, Any] = field(default_factory=dict)  # interventions / LSAC the run applied


RECORD_ONLY = ("interventions", "lsac")
"""Request fields a session stores as a record of what was applied; reopening does not re-apply them."""


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    """Rebuild a :class:`GenerationRequest` from its ``to_dict`` form, checked field by field.

    Unknown keys are an error; ``interventions`` and ``lsac`` are records (see :data:`RECORD_ONLY`)
    and are not turned back into live objects. Schema-1 files kept them under ``extras``.
    """
    if not isinstance(data, dict):
        raise EngineError("the session's request is not a table of fields: the file is damaged")
    data = dict(data)
    extras = data.pop("extras", None) or {}
    if isinstance(extras, dict) and extras.get("nan_policy") in ("warn", "raise"):
        data.setdefault("nan_policy", extras["nan_policy"])
    for key in RECORD_ONLY:
        data.pop(key, None)
    known = {f.name for f in fields(GenerationRequest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EngineError(f"unknown request fields {unknown[:5]}: the session was written by a newer version")
    if "prompt" not in data:
        raise EngineError("the session's request has no prompt: the file is damaged")
    for name in ("sites", "capture_steps"):
        value = data.get(name)
        if value is not None and (not isinstance(value, list) or len(value) > 100_000):
            raise EngineError(f"the session's {name} is not a list: the file is damaged")
    if any(not isinstance(s, str) for s in data.get("sites") or ()):
        raise EngineError("the session's sites hold non-text names: the file is damaged")
    if data.get("stream_dir") is not None and not isinstance(data["stream_dir"], str):
        raise EngineError("the session's stream_dir is not text: the file is damaged")
    for name in ("capture", "per_head"):
        if name in data and not isinstance(data[name], bool):
            raise EngineError(f"the session's {name} is not true/false: the file is damaged")
    if data.get("maps") is not None:
        if not isinstance(data["maps"], dict):
            raise EngineError("the session's maps are not a table of fields: the file is damaged")
        data["maps"] = KeptMaps.from_dict(data["maps"])
    try:
        request = GenerationRequest(**data)
        return request.validate()
    except EngineError as exc:
        raise EngineError(f"the session's recipe is not valid: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"the session's recipe is damaged ({exc}): save the run again") from None


def recorded_interventions(data: dict[str, Any]) -> dict[str, Any]:
    """What a stored request says was applied (interventions, LSAC), as plain data."""
    extras = data.get("extras") if isinstance(data.get("extras"), dict) else {}
    return {"interventions": data.get("interventions") or extras.get("interventions_recorded") or [],
            "lsac": data.get("lsac")}


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    """The request as JSON-ready data (live interventions and LSAC as their descriptions)."""
    return request.to_dict()


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
    """Read a session file written by :func:`save_session` (any supported schema version).

    Every entry is checked for its type and every array for its size
    (:func:`engine.loaders.max_array_bytes`) before use; a damaged file raises one
    :class:`EngineError` line.
    """
    source = Path(path)
    if not source.is_file():
        raise EngineError(f"no session file at {source}: check the path")
    check = Checker(f"session file {source}", "open another .aiba file or save the run again")
    foreign = Checker(str(source), "open a .aiba file written by AIBA Studio")
    with open_zip(source, foreign, problem="is not an AIBA Studio session file") as zf:
        if _JSON_NAME not in zf.namelist():
            raise foreign.fail(f"is not an AIBA Studio session file (it has no {_JSON_NAME})")
        raw = read_zip_member(zf, _JSON_NAME, check, int(MAX_JSON_MB * 2**20))
        doc = check.table(decode_json(raw, check), _JSON_NAME)
        doc = _migrate(doc, source)
        request_doc = check.table(check.key(doc, "request"), "request")
        request = request_from_dict(request_doc)
        head_masks = {}
        for site, flags in check.table(doc.get("head_masks", {}), "head_masks").items():
            head_masks[site] = [check.flag(b, f"head mask of {site!r:.60}")
                                for b in check.items(flags, f"head mask of {site!r:.60}", 4096)]
        session = Session(
            model=check.text(check.key(doc, "model"), "model", 4096),
            device=check.text(check.key(doc, "device"), "device", 64),
            request=request,
            recorded=_recorded(request_doc, check),
            head_masks=head_masks,
            view=dict(check.table(doc.get("view", {}), "view")),
            saved_at=check.text(doc.get("saved_at", ""), "saved_at", 64),
        )
        if doc.get("result") is not None:
            session.result = _result_from_doc(check.table(doc["result"], "result"), zf, check)
    return session


def _recorded(request_doc: dict[str, Any], check: Checker) -> dict[str, Any]:
    record = recorded_interventions(request_doc)
    check.items(record["interventions"], "record of interventions")
    if record["lsac"] is not None:
        check.table(record["lsac"], "record of LSAC")
    return record


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


def _result_from_doc(doc: dict[str, Any], zf: zipfile.ZipFile, check: Checker) -> RunResult:
    """The captured run of a session, every entry and array checked before use."""
    sites = [_site_from_doc(check.table(s, "site entry"), check) for s in check.items(check.key(doc, "sites"), "sites")]
    lattices = {}
    for name, value in check.table(check.key(doc, "lattices"), "lattices").items():
        pair = check.items(value, f"lattice of {name!r:.60}", 2)
        if len(pair) != 2:
            raise check.fail(f"has a lattice of {name!r:.60} that is not two numbers")
        lattices[name] = (check.whole(pair[0], "lattice size", 1), check.whole(pair[1], "lattice size", 1))
    frames: dict[tuple[int, str], np.ndarray] = {}
    for entry in check.items(check.key(doc, "frames"), "frames", MAX_MEMBERS):
        entry = check.table(entry, "frame entry")
        step = check.whole(check.key(entry, "step"), "frame step", 0, LIMITS.steps_max)
        site = check.text(check.key(entry, "site"), "frame site", 4096)
        member = check.text(check.key(entry, "member"), "frame member", 4096)
        probs = _read_array(zf, member, check, (3,), "f")
        lattice = lattices.get(site)
        if lattice is not None and probs.shape[1] != lattice[0] * lattice[1]:
            raise check.fail(f"has a frame of {site!r:.60} with {probs.shape[1]} queries for a "
                             f"{lattice[0]}x{lattice[1]} lattice")
        frames[(step, site)] = probs
    mel_spec = doc.get("mel_spec")
    if mel_spec is not None:
        mel_spec = check.table(mel_spec, "mel_spec")
        try:
            mel_spec = MelSpec(**mel_spec)
        except TypeError as exc:
            raise check.fail(f"has a mel_spec with wrong entries ({exc})") from None
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            check.whole(getattr(mel_spec, name), f"mel_spec {name}", 1)
        check.number(mel_spec.fmin, "mel_spec fmin")
        check.number(mel_spec.fmax, "mel_spec fmax")
        check.text(mel_spec.mel_scale, "mel_spec mel_scale", 16)
    tokens = {k: check.texts(v, f"token list {k!r:.60}")
              for k, v in check.table(check.key(doc, "tokens"), "tokens").items()}
    frames_dir = doc.get("frames_dir")
    return RunResult(
        run_id=check.whole(check.key(doc, "run_id"), "run_id"),
        audio=_read_array(zf, "audio.npy", check, (1, 2), "f"),
        sample_rate=check.whole(check.key(doc, "sample_rate"), "sample_rate", 1, 10_000_000),
        mel=_read_array(zf, "mel.npy", check, (2,), "f") if check.flag(doc.get("has_mel", False), "has_mel") else None,
        mel_spec=mel_spec,
        tokens=tokens,
        sites=sites,
        lattices=lattices,
        frames=frames,
        sigmas=_read_array(zf, "sigmas.npy", check, (1,), "fiu"),
        timesteps=_read_array(zf, "timesteps.npy", check, (1,), "fiu"),
        recipe=dict(check.table(check.key(doc, "recipe"), "recipe")),
        frames_dir=None if frames_dir is None else check.text(frames_dir, "frames_dir", 4096),
        warnings=check.texts(doc.get("warnings", []), "warnings"),
        elapsed_s=check.number(doc.get("elapsed_s", 0.0), "elapsed_s"),
    )


def _read_array(zf: zipfile.ZipFile, name: str, check: Checker, ndims: tuple[int, ...], kinds: str) -> np.ndarray:
    """A read-only array member, its header (shape × itemsize) checked before it is inflated."""
    arr = check.array(read_zip_array(zf, name, check), name, ndims, kinds)
    arr.setflags(write=False)
    return arr


def _site_from_doc(doc: dict[str, Any], check: Checker) -> Site:
    lattice = doc.get("lattice")
    if lattice is not None:
        pair = check.items(lattice, "site lattice", 2)
        if len(pair) != 2:
            raise check.fail("has a site lattice that is not two numbers")
        lattice = (check.whole(pair[0], "site lattice", 1), check.whole(pair[1], "site lattice", 1))
    kind = check.text(check.key(doc, "kind"), "site kind", 16)
    if kind not in SITE_KINDS:
        raise check.fail(f"has a site of kind {kind!r} (expected one of {', '.join(SITE_KINDS)})")
    extra = sorted(set(doc) - {"name", "kind", "context", "heads", "kv_heads", "index", "lattice"})
    if extra:
        raise check.fail(f"has a site with unknown entries {extra[:5]}")
    return Site(name=check.text(check.key(doc, "name"), "site name", 4096), kind=kind,
                context=check.text(check.key(doc, "context"), "site context", 64),
                heads=check.whole(check.key(doc, "heads"), "site heads", 1, 4096),
                kv_heads=check.whole(check.key(doc, "kv_heads"), "site kv_heads", 1, 4096),
                index=check.whole(check.key(doc, "index"), "site index", 0, 1_000_000), lattice=lattice)
