"""Session files: round trip, atomic writes, schema versions, bad input."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from engine.backends.base import RunResult
from engine.session import (
    SESSION_SCHEMA_VERSION,
    Session,
    load_session,
    request_from_dict,
    save_session,
)
from engine.types import EngineError, GenerationRequest, MelSpec, Site


def _result() -> RunResult:
    rng = np.random.default_rng(3)
    frames = {
        (s, name): rng.random((2, 12, 5)).astype(np.float16)
        for s in range(3)
        for name in ("down.attn2", "up.attn2")
    }
    return RunResult(
        run_id=7,
        audio=rng.standard_normal(1600).astype(np.float32),
        sample_rate=16000,
        mel=rng.standard_normal((10, 8)).astype(np.float32),
        mel_spec=MelSpec(16000, 1024, 160, 8, 30.0, 8000.0),
        tokens={"text": ["<bos>", "bass", "and", "drums", "<pad>"]},
        sites=[Site("down.attn2", "cross", "text", 2, 2, 0, (4, 3)), Site("up.attn2", "cross", "text", 2, 2, 1, (4, 3))],
        lattices={"down.attn2": (4, 3), "up.attn2": (4, 3)},
        frames=frames,
        sigmas=np.linspace(1.0, 0.0, 3),
        timesteps=np.array([999.0, 500.0, 1.0]),
        recipe={"model": "embedded", "scheduler": "DDIM"},
        warnings=["a warning"],
        elapsed_s=1.5,
    )


def _session(result: RunResult | None) -> Session:
    req = GenerationRequest(prompt="bass and drums", seed=4, steps=3, duration=0.1, head_mask={"up.attn2": [True, False]})
    return Session(
        model="embedded",
        device="cpu",
        request=req,
        head_masks={"up.attn2": [True, False], "down.attn2": [False, True]},
        view={"site": "up.attn2", "step": 2, "levels": [0.0, 0.5], "cmap": "magma"},
        result=result,
    )


def test_round_trip_keeps_every_field_and_array(tmp_path):
    original = _session(_result())
    path = save_session(tmp_path / "run", original)
    assert path.name == "run.aiba"
    back = load_session(path)
    assert back.request == original.request
    assert back.head_masks == original.head_masks
    assert back.view == original.view
    assert back.model == "embedded" and back.device == "cpu"
    res, ref = back.result, original.result
    assert res is not None and ref is not None
    np.testing.assert_array_equal(res.audio, ref.audio)
    np.testing.assert_array_equal(res.mel, ref.mel)
    np.testing.assert_array_equal(res.sigmas, ref.sigmas)
    assert set(res.frames) == set(ref.frames)
    for key, arr in ref.frames.items():
        assert res.frames[key].dtype == np.float16
        np.testing.assert_array_equal(res.frames[key], arr)
    assert res.sites == ref.sites and res.lattices == ref.lattices
    assert res.mel_spec == ref.mel_spec and res.tokens == ref.tokens
    assert res.recipe == ref.recipe and res.warnings == ref.warnings
    assert not res.audio.flags.writeable


def test_recipe_only_session_has_no_arrays(tmp_path):
    path = save_session(tmp_path / "r.aiba", _session(_result()), include_arrays=False)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["session.json"]
    assert load_session(path).result is None


def test_write_is_atomic_when_serialisation_fails(tmp_path):
    path = save_session(tmp_path / "s.aiba", _session(None))
    before = path.read_bytes()
    bad = _session(None)
    bad.view = {"unstorable": object()}
    with pytest.raises(TypeError):
        save_session(path, bad)
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["s.aiba"]  # no temporary file left behind


def test_newer_schema_and_foreign_files_are_refused(tmp_path):
    path = save_session(tmp_path / "s.aiba", _session(None))
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("session.json"))
    doc["schema_version"] = SESSION_SCHEMA_VERSION + 1
    newer = tmp_path / "newer.aiba"
    with zipfile.ZipFile(newer, "w") as zf:
        zf.writestr("session.json", json.dumps(doc))
    with pytest.raises(EngineError, match="update AIBA Studio"):
        load_session(newer)
    junk = tmp_path / "junk.aiba"
    junk.write_text("not a zip")
    with pytest.raises(EngineError, match="not an AIBA Studio session"):
        load_session(junk)
    with pytest.raises(EngineError, match="no session file"):
        load_session(tmp_path / "missing.aiba")
    with pytest.raises(EngineError, match="does not exist"):
        save_session(tmp_path / "nowhere" / "x.aiba", _session(None))


def test_request_from_dict_rejects_unknown_fields():
    req = GenerationRequest(prompt="x", steps=5)
    assert request_from_dict(req.to_dict()) == req
    with pytest.raises(EngineError, match="unknown request fields"):
        request_from_dict({**req.to_dict(), "bogus": 1})


def test_interventions_are_recorded_not_pickled(tmp_path):
    """A steered request saves: the intervention's description is kept, the object is not."""
    from engine.session import Session, load_session, save_session
    from engine.types import GenerationRequest

    class FakeSteer:  # stands for any intervention object: only its describe() is stored
        def wrap(self, site, module, inner):
            return None

        def describe(self):
            return {"type": "caa", "alpha": 12.5, "sites": ["down_blocks.1.attentions.0"]}

    from engine.recipe import LsacSpec

    request = GenerationRequest(prompt="bass", interventions=(FakeSteer(),),
                                lsac=LsacSpec(preset="safe", report=object()))
    path = save_session(tmp_path / "s", Session(model="tiny:audioldm2", device="cpu", request=request,
                                                head_masks={}, view={}, result=None))
    loaded = load_session(path)
    assert loaded.recorded["interventions"] == [FakeSteer().describe()]
    assert loaded.request.interventions == ()  # not re-applied on reopening
    assert loaded.recorded["lsac"]["preset"] == "safe"
    assert loaded.recorded["lsac"]["report"] is True  # the report object is recorded as present only


def test_a_real_tiny_run_round_trips_through_the_checked_loader(ldm, tmp_path):
    """Frames, lattices and sites of a captured tiny AudioLDM2 run pass every loader check."""
    request = GenerationRequest(prompt="a bass", steps=2, duration=0.32, per_head=True)
    result = ldm.generate(request)
    assert result.frames
    path = save_session(tmp_path / "run", Session(model="tiny:audioldm2", device="cpu", request=request,
                                                  result=result))
    back = load_session(path).result
    assert back is not None and set(back.frames) == set(result.frames)
    for key, probs in result.frames.items():
        np.testing.assert_array_equal(back.frames[key], probs)
    assert back.lattices == result.lattices and back.sites == result.sites
