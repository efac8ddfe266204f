"""One planning path for every caller: ``plan_capture`` counts the maps a caller keeps
(``request.maps``) as well as the frames, for eval items as for analyze (the GUI: tests/gui)."""

from __future__ import annotations

import json

import pytest

import main
from engine.evaluation.maps import concept_map, head_data
from engine.evaluation.runner import EvalOptions, Evaluator, Item
from engine.probe.budget import maps_bytes, plan_capture
from engine.probe.kept_maps import KeptMaps
from engine.session import request_from_dict
from engine.types import EngineError, GenerationRequest

MB = 2**20


def held_frames(result) -> int:
    return sum(a.nbytes for a in result.frames.values()) + sum(
        s.nbytes for s in result.aux.get("sink_mass", {}).values())


@pytest.mark.parametrize("aggregator", ["mean", "topk"])
def test_eval_item_estimate_is_what_it_holds(ldm, tmp_path, aggregator):
    opts = EvalOptions(dataset=str(tmp_path), out=str(tmp_path / "out"), steps=4, duration=0.32,
                       guidance=3.0, grid=(48, 24), per_head=True, aggregator=aggregator)
    ev = Evaluator(ldm, opts)
    item = Item("i0", None, "Bass", "bass", 0, "warm bass and soft piano", 3)
    request = ev.request(item)
    assert request.maps is not None and request.maps.head_maps and request.maps.pooled
    plan = plan_capture(ldm, request)
    result = ev.run(item)
    g = concept_map(result, item.word, ev.settings)
    heads = head_data(result, item.word, opts.grid)
    rows = 3 if aggregator == "topk" else 1  # the top-k accumulator holds k maps; the result is one
    maps_held = rows * g.nbytes + sum(m.nbytes for m in heads.maps.values())
    assert abs(plan.maps_bytes - maps_held) <= 0.05 * maps_held
    held = held_frames(result) + maps_held
    estimate = plan.estimate_bytes + plan.maps_bytes
    assert abs(estimate - held) <= 0.05 * held
    assert plan.maps_bytes > 0.2 * estimate  # the maps are a real share here, not a rounding error


def test_budget_smaller_than_the_maps_is_one_clear_error(ldm, tmp_path, capsys):
    maps = KeptMaps(grid=(128, 64), views=True)
    req = GenerationRequest(prompt="warm bass and soft piano", steps=4, duration=0.32, maps=maps)
    need = maps_bytes(ldm, req)
    with pytest.raises(EngineError, match="the maps alone need") as err:
        plan_capture(ldm, GenerationRequest(**{**vars(req), "memory_budget_mb": need / 2 / MB}))
    assert "\n" not in str(err.value)
    # the same line from the command line, with exit code 2 and nothing written
    out = tmp_path / "run"
    code = main.main(["analyze", "--model", "tiny:audioldm2", "--prompt", "warm bass", "--steps", "4",
                      "--duration", "0.32", "--memory-budget-mb", "0.05", "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "the maps alone need" in lines[0]
    assert not out.exists()


def test_maps_travel_with_the_request_in_a_session():
    maps = KeptMaps(grid=(64, 32), method="topk", k=2, pooled=True, thumbnails=(26, 18, 12))
    req = GenerationRequest(prompt="bass", steps=3, maps=maps)
    back = request_from_dict(json.loads(json.dumps(req.to_dict())))
    assert back.maps == maps and back == req
    with pytest.raises(EngineError, match="maps are damaged"):
        request_from_dict({**req.to_dict(), "maps": {"grid": [4, 4], "colour": "red"}})


def test_thumbnails_and_views_scale_with_sites_and_steps(ldm):
    # an independent count for the tiny model: 8 cross sites (4 t5 + 4 loa), each frame's stored keys
    req = GenerationRequest(prompt="warm bass and soft piano", steps=30, duration=0.32,
                            maps=KeptMaps(grid=(8, 4), thumbnails=(26, 18, 12)))
    assert maps_bytes(ldm, req) == 2 * 4 * (8 * 18) * (12 * 26)
    few = GenerationRequest(**{**vars(req), "steps": 5})
    assert maps_bytes(ldm, few) == 2 * 4 * (8 * 18) * (5 * 26)
    assert maps_bytes(ldm, GenerationRequest(**{**vars(req), "capture": False})) == 0
