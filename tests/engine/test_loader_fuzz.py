"""Property-based tests of every loader: damaged files end in one EngineError line or load.

Valid files (a session with a captured run, steering vectors as .npz and .safetensors, an SAE, a
convergence profile, a freeze sweep, per-head eval data) are mutated (truncated, bytes flipped,
JSON values replaced by wrong types, .npy headers declaring huge or unsupported arrays, zip bombs)
and loaded. Any exception other than :class:`EngineError` fails the test.
"""

from __future__ import annotations

import functools
import io
import json
import math
import struct
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.backends.base import RunResult
from engine.errors import EngineError
from engine.loaders import ENV_MAX_ARRAY_MB, max_array_bytes
from engine.session import Session, load_session, save_session
from engine.types import GenerationRequest, MelSpec, Site

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------- helpers


def outcome(load: Callable[[Path], Any], path: Path, record: bool = True) -> str:
    """``"ok"`` or ``"error"``; an EngineError must be one line, any other exception propagates.
    ``record``: count the outcome in Hypothesis' statistics."""
    try:
        load(path)
    except EngineError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(str(exc))
        if record:
            event("EngineError")
        return "error"
    if record:
        event("loaded")
    return "ok"


def with_bytes(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="aiba-fuzz-"))
    path = folder / f"f{suffix}"
    path.write_bytes(data)
    return path


def rezip(original: bytes, replace: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    """The zip ``original`` with the members in ``replace`` swapped (``b""`` values drop a member)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w", compress) as dst:
        for name in src.namelist():
            if name in replace:
                continue
            dst.writestr(name, src.read(name))
        for name, data in replace.items():
            if data:
                dst.writestr(name, data)
    return out.getvalue()


def npy_header(descr: str, shape: tuple[int, ...], fortran: bool = False) -> bytes:
    """A version-1.0 ``.npy`` header declaring ``shape`` of ``descr`` (no data)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def json_paths(doc: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Every path (keys / indices) into a JSON document, up to depth 6 and 3 list items each."""
    out = [prefix] if prefix else []
    if depth > 6:
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_paths(v, (*prefix, k), depth + 1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out += json_paths(v, (*prefix, i), depth + 1)
    return out


def replaced(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([2**64, -1, 0, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.just("many"),
    st.just("x" * 100_000), st.lists(st.integers(-3, 3), max_size=4),
    st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
DESCRS = st.sampled_from(["<f4", "<f2", ">f8", "<i8", "|b1", "<U8", "|O", "|V8", "<c8", "<M8[s]"])
SHAPES = st.lists(st.one_of(st.integers(0, 8), st.integers(2**20, 2**44)), min_size=0, max_size=4).map(tuple)


def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, mask in flips:
        out[pos % len(out)] ^= mask
    return bytes(out)


FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=8)

# ---------------------------------------------------------------------------------------- sessions


def run_result() -> RunResult:
    rng = np.random.default_rng(0)
    sites = [Site("down.attn2", "cross", "text", 2, 2, 0, (4, 3)), Site("up.attn1", "self", "self", 2, 2, 1, (4, 3))]
    frames = {(s, site.name): rng.random((2, 12, 5)).astype(np.float16) for s in range(2) for site in sites}
    return RunResult(run_id=3, audio=rng.standard_normal(400).astype(np.float32), sample_rate=16000,
                     mel=rng.standard_normal((6, 8)).astype(np.float32),
                     mel_spec=MelSpec(16000, 1024, 160, 8, 30.0, 8000.0),
                     tokens={"text": ["<bos>", "bass"]}, sites=sites,
                     lattices={s.name: (4, 3) for s in sites}, frames=frames,
                     sigmas=np.linspace(1.0, 0.0, 2), timesteps=np.array([999.0, 1.0]),
                     recipe={"model": "embedded"}, warnings=["w"], elapsed_s=0.5)


@functools.cache
def session_bytes() -> bytes:
    req = GenerationRequest(prompt="bass", seed=1, steps=2, duration=0.1, head_mask={"down.attn2": [True, False]})
    session = Session(model="embedded", device="cpu", request=req, head_masks={"down.attn2": [True, False]},
                      view={"site": "down.attn2"}, result=run_result())
    with tempfile.TemporaryDirectory() as tmp:
        return save_session(Path(tmp) / "s.aiba", session).read_bytes()


def session_doc() -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(session_bytes())) as zf:
        return json.loads(zf.read("session.json"))


SESSION_PATHS = json_paths(session_doc())
SESSION_MEMBERS = sorted(n for n in zipfile.ZipFile(io.BytesIO(session_bytes())).namelist() if n.endswith(".npy"))


def test_the_unmutated_session_loads():
    back = load_session(with_bytes(session_bytes(), ".aiba"))
    assert back.result is not None and len(back.result.frames) == 4


@FUZZ
@given(cut=st.integers(0, 10**9))
def test_truncated_session(cut):
    data = session_bytes()
    assert outcome(load_session, with_bytes(data[: cut % len(data)], ".aiba")) == "error"


@FUZZ
@given(flips=FLIPS)
def test_session_with_flipped_bytes(flips):
    outcome(load_session, with_bytes(flip(session_bytes(), flips), ".aiba"))


@settings(FUZZ, max_examples=150)
@given(path=st.sampled_from(SESSION_PATHS), value=WRONG, delete=st.booleans())
def test_session_json_with_wrong_types(path, value, delete):
    doc = replaced(session_doc(), path, value, delete)
    data = rezip(session_bytes(), {"session.json": json.dumps(doc).encode()})
    outcome(load_session, with_bytes(data, ".aiba"))


@pytest.mark.parametrize(("field", "value"), [("steps", "many"), ("seed", 2**64), ("guidance", math.nan),
                                              ("duration", -1.0), ("prompt", 5), ("sites", [1, 2]),
                                              ("head_mask", {"a": "yes"}), ("capture_steps", ["x"])])
def test_a_wrong_request_field_is_refused_on_opening(field, value):
    doc = session_doc()
    doc["request"][field] = value
    path = with_bytes(rezip(session_bytes(), {"session.json": json.dumps(doc).encode()}), ".aiba")
    with pytest.raises(EngineError, match="recipe|session"):
        load_session(path)


@FUZZ
@given(member=st.sampled_from(SESSION_MEMBERS), descr=DESCRS, shape=SHAPES, fortran=st.booleans(),
       payload=st.integers(0, 64))
def test_session_npy_headers_with_any_shape_and_type(member, descr, shape, fortran, payload):
    data = rezip(session_bytes(), {member: npy_header(descr, shape, fortran) + bytes(payload)})
    tracemalloc.start()
    try:
        outcome(load_session, with_bytes(data, ".aiba"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # nothing near the declared size was allocated


def test_huge_declared_array_is_refused_before_reading():
    data = rezip(session_bytes(), {"audio.npy": npy_header("<f4", (2**40,))})
    with pytest.raises(EngineError, match="limit"):
        load_session(with_bytes(data, ".aiba"))


@settings(FUZZ, max_examples=10)
@given(mb=st.integers(2, 6))
def test_zip_bomb_is_refused_without_inflating(mb):
    """A member of ``mb`` MB of zeros (kilobytes compressed) over a 1 MB limit: refused from the
    header, and far less than ``mb`` MB is ever allocated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_MAX_ARRAY_MB, "1")
        zip_bomb(mb)


def zip_bomb(mb: int) -> None:
    n = mb * 2**20 // 4
    member = npy_header("<f4", (n,)) + bytes(n * 4)
    data = rezip(session_bytes(), {"audio.npy": member})
    assert len(data) < 200_000
    path = with_bytes(data, ".aiba")
    tracemalloc.start()
    try:
        with pytest.raises(EngineError, match="limit"):
            load_session(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_array_limit_setting(monkeypatch):
    monkeypatch.delenv(ENV_MAX_ARRAY_MB, raising=False)
    assert max_array_bytes() == 512 * 2**20
    monkeypatch.setenv(ENV_MAX_ARRAY_MB, "0.5")
    assert max_array_bytes() == 2**19
    for bad in ("-1", "nan", "lots", "inf"):
        monkeypatch.setenv(ENV_MAX_ARRAY_MB, bad)
        with pytest.raises(EngineError, match=ENV_MAX_ARRAY_MB):
            max_array_bytes()


# ---------------------------------------------------------------------------------------- steering vectors


@functools.cache
def steering_bytes(suffix: str) -> bytes:
    from engine.interventions.caa import SteeringVectors

    vecs = SteeringVectors({"a.attn2": np.ones(8, np.float32) / math.sqrt(8), "b.attn2": np.eye(8, dtype=np.float32)[0]},
                           "tiny:audioldm2", concept="bass", positive=["bass"], negative=["no bass"])
    with tempfile.TemporaryDirectory() as tmp:
        return vecs.save(Path(tmp) / f"v{suffix}").read_bytes()


def load_vectors(path: Path):
    from engine.interventions.caa import SteeringVectors

    return SteeringVectors.load(path)


def test_unmutated_steering_files_load():
    for suffix in (".npz", ".safetensors"):
        back = load_vectors(with_bytes(steering_bytes(suffix), suffix))
        assert back.sites == ["a.attn2", "b.attn2"] and back.vectors["a.attn2"].shape == (8,)


@FUZZ
@given(suffix=st.sampled_from([".npz", ".safetensors"]), cut=st.integers(0, 10**9))
def test_truncated_steering_file(suffix, cut):
    data = steering_bytes(suffix)
    assert outcome(load_vectors, with_bytes(data[: cut % len(data)], suffix)) == "error"


@FUZZ
@given(suffix=st.sampled_from([".npz", ".safetensors"]), flips=FLIPS)
def test_steering_file_with_flipped_bytes(suffix, flips):
    outcome(load_vectors, with_bytes(flip(steering_bytes(suffix), flips), suffix))


def steering_meta() -> dict[str, Any]:
    with np.load(io.BytesIO(steering_bytes(".npz"))) as z:
        return json.loads(str(z["__meta__"]))


def safetensors_file(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors_parts(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@settings(FUZZ, max_examples=100)
@given(suffix=st.sampled_from([".npz", ".safetensors"]), path=st.sampled_from(json_paths(steering_meta())),
       value=WRONG, delete=st.booleans())
def test_steering_metadata_with_wrong_types(suffix, path, value, delete):
    meta = json.dumps(replaced(steering_meta(), path, value, delete))
    if suffix == ".npz":
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.array(meta))
        data = rezip(steering_bytes(".npz"), {"__meta__.npy": buf.getvalue()})
    else:
        header, body = safetensors_parts(steering_bytes(".safetensors"))
        header["__metadata__"]["aiba_steering"] = meta
        data = safetensors_file(header, body)
    outcome(load_vectors, with_bytes(data, suffix))


@FUZZ
@given(descr=DESCRS, shape=SHAPES, payload=st.integers(0, 64), member=st.sampled_from(["v0.npy", "__meta__.npy"]))
def test_steering_npz_with_any_npy_header(descr, shape, payload, member):
    data = rezip(steering_bytes(".npz"), {member: npy_header(descr, shape) + bytes(payload)})
    outcome(load_vectors, with_bytes(data, ".npz"))


@FUZZ
@given(tensor=st.sampled_from(["v0", "v1"]), field=st.sampled_from(["dtype", "shape", "data_offsets"]),
       value=st.one_of(WRONG, SHAPES.map(list), st.sampled_from(["F64", "BF16", "I8", "F8_E4M3", "Q4"]),
                       st.lists(st.integers(0, 2**62), min_size=2, max_size=2)))
def test_steering_safetensors_with_any_header(tensor, field, value):
    header, body = safetensors_parts(steering_bytes(".safetensors"))
    header[tensor][field] = value
    outcome(load_vectors, with_bytes(safetensors_file(header, body), ".safetensors"))


def test_huge_safetensors_shape_is_refused_from_the_header():
    header, body = safetensors_parts(steering_bytes(".safetensors"))
    header["v0"] = {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}
    with pytest.raises(EngineError, match="limit"):
        load_vectors(with_bytes(safetensors_file(header, body), ".safetensors"))


# ---------------------------------------------------------------------------------------- SAE, convergence, sweep


@functools.cache
def sae_bytes() -> bytes:
    from engine.interventions.sae import TopKSAE

    with tempfile.TemporaryDirectory() as tmp:
        return TopKSAE(4, 2, 2).save(Path(tmp) / "s.safetensors", {"site": "a.attn2"}).read_bytes()


def load_sae(path: Path):
    from engine.interventions.sae import TopKSAE

    return TopKSAE.load(path)


@FUZZ
@given(mutation=st.one_of(st.tuples(st.just("cut"), st.integers(0, 10**9)), st.tuples(st.just("flip"), FLIPS),
                          st.tuples(st.just("shape"), st.sampled_from(["W_dec", "W_enc", "b_enc", "b_pre"]),
                                    SHAPES.map(list))))
def test_damaged_sae_file(mutation):
    data = sae_bytes()
    assert outcome(load_sae, with_bytes(data, ".safetensors"), record=False) == "ok"
    if mutation[0] == "cut":
        data = data[: mutation[1] % len(data)]
    elif mutation[0] == "flip":
        data = flip(data, mutation[1])
    else:
        header, body = safetensors_parts(data)
        header[mutation[1]]["shape"] = mutation[2]
        data = safetensors_file(header, body)
    outcome(load_sae, with_bytes(data, ".safetensors"))


@functools.cache
def report_json() -> str:
    from engine.convergence.diagnostics import ConvergenceReport, SiteShape

    entropy = np.array([[1.0, 2.0, 0.5], [0.9, 1.5, 0.5], [0.85, 1.2, 0.5]])
    report = ConvergenceReport(sites=["a", "b", "c"], kinds=["self", "self", "cross"], entropy=entropy,
                               late_change=np.array([0.05, 0.3, 0.0]), threshold={"self": 0.1, "cross": 0.0},
                               stable=np.array([True, False, True]), model_id="tiny", steps=3,
                               shapes={"a": SiteShape(2, 12, 12, 8, 8, 2, 2, 4, 8)})
    with tempfile.TemporaryDirectory() as tmp:
        return report.save(Path(tmp) / "c.json").read_text()


def load_report(path: Path):
    from engine.convergence.diagnostics import ConvergenceReport

    return ConvergenceReport.load(path)


@settings(FUZZ, max_examples=100)
@given(data=st.data(), delete=st.booleans(), value=WRONG)
def test_convergence_profile_with_wrong_types(data, delete, value):
    doc = json.loads(report_json())
    assert outcome(load_report, with_bytes(report_json().encode(), ".json"), record=False) == "ok"
    path = data.draw(st.sampled_from(json_paths(doc)))
    outcome(load_report, with_bytes(json.dumps(replaced(doc, path, value, delete)).encode(), ".json"))


@functools.cache
def sweep_bytes() -> bytes:
    from engine.convergence.freeze import METRICS

    buf = io.BytesIO()
    np.savez(buf, sites=np.array(["a", "b"]), kinds=np.array(["self", "cross"]), freeze_steps=np.array([1, 2]),
             steps=4, **{m: np.full((2, 2), 0.1) for m in METRICS})
    return buf.getvalue()


def load_sweep_file(path: Path):
    from engine.convergence.freeze import load_sweep

    return load_sweep(path)


@FUZZ
@given(member=st.sampled_from(["sites.npy", "kinds.npy", "freeze_steps.npy", "steps.npy", "iou.npy"]),
       descr=DESCRS, shape=SHAPES, payload=st.integers(0, 64), cut=st.one_of(st.none(), st.integers(0, 10**9)))
def test_damaged_freeze_sweep(member, descr, shape, payload, cut):
    assert outcome(load_sweep_file, with_bytes(sweep_bytes(), ".npz"), record=False) == "ok"
    data = rezip(sweep_bytes(), {member: npy_header(descr, shape) + bytes(payload)}, zipfile.ZIP_STORED)
    if cut is not None:
        data = data[: cut % len(data)]
    outcome(load_sweep_file, with_bytes(data, ".npz"))


# ---------------------------------------------------------------------------------------- eval read-back


@functools.cache
def head_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"map/a": np.ones((2, 4, 3)), "ratio/a": np.zeros(2)})
    return buf.getvalue()


def load_heads(path: Path):
    from engine.evaluation.head_selection import load_head_data

    return load_head_data(path)


@FUZZ
@given(member=st.sampled_from(["map/a.npy", "ratio/a.npy"]), descr=DESCRS, shape=SHAPES,
       payload=st.integers(0, 200), flips=st.one_of(st.none(), FLIPS))
def test_damaged_per_head_data(member, descr, shape, payload, flips):
    assert outcome(load_heads, with_bytes(head_npz(), ".npz"), record=False) == "ok"
    data = rezip(head_npz(), {member: npy_header(descr, shape) + bytes(payload)})
    if flips is not None:
        data = flip(data, flips)
    outcome(load_heads, with_bytes(data, ".npz"))


@pytest.mark.parametrize("line", ['[1, 2]', '"text"', '{"no_id": 1}', '{"id": 5}', '{"id": "x"}'])
def test_head_select_refuses_damaged_item_records(tmp_path, line):
    from engine.evaluation.head_selection import run_head_selection

    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "x.npz").write_bytes(head_npz())
    (tmp_path / "items.jsonl").write_text(line + "\n" + '{"id": "y"}\n')
    with pytest.raises(EngineError):
        run_head_selection(tmp_path, figures=False)


ITEM = {"id": "t1/bass/0", "track": "t1", "class": "Bass", "prompt": "a bass", "seed": 0,
        "scores": {"region": {"iou": 0.5, "ap": 0.4, "tp": 3, "fp": 1, "fn": 2, "tn": 10, "time_only": False},
                   "band": None},
        "profiles": {"attention": [0.1, 0.2], "stem": [0.3, 0.4], "region": [1.0, 0.0]}}


def check_item(path: Path) -> None:
    from engine.evaluation.tables import check_item_record

    check_item_record(json.loads(path.read_text()), path)


@settings(FUZZ, max_examples=100)
@given(path=st.sampled_from(json_paths(ITEM)), value=WRONG, delete=st.booleans())
def test_eval_item_records_with_wrong_types(path, value, delete):
    """items.jsonl records as eval's read-back (tables, figures, head-select) checks them."""
    assert outcome(check_item, with_bytes(json.dumps(ITEM).encode(), ".json"), record=False) == "ok"
    outcome(check_item, with_bytes(json.dumps(replaced(ITEM, path, value, delete)).encode(), ".json"))
