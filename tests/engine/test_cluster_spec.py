"""``engine.cluster`` without a Ray cluster: the spec's one-line errors, the flags, the local mode of
``map_items`` (Ray not imported), ``in_item_order``, and the message when Ray is not installed."""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import dataclass

import pytest

from engine.cluster import RAY_MISSING, ClusterSpec, ItemOutcome, in_item_order, map_items
from engine.commands.flags import add_cluster, cluster_spec, harden_numbers
from engine.errors import EngineError, RunCancelled
from engine.types import CancelToken


@dataclass(frozen=True)
class Squares:
    """Squares its items; a negative item raises; counts its setups in the state."""

    def setup(self) -> dict:
        return {"setups": 1, "pid": os.getpid()}

    def run(self, state: dict, item: int) -> tuple[int, int]:
        if item < 0:
            raise ValueError(f"negative item {item}\nsecond line")
        return item * item, state["pid"]


def _parse(argv: list[str]) -> ClusterSpec:
    p = argparse.ArgumentParser()
    add_cluster(p)
    harden_numbers(p)
    return cluster_spec(p.parse_args(argv))


@pytest.mark.parametrize(("spec", "says"), [
    (ClusterSpec("local", workers=0), "--workers must be a whole number between 1"),
    (ClusterSpec("local", workers=2.5), "--workers must be a whole number"),
    (ClusterSpec("local", gpus_per_worker=-0.5), "--gpus-per-worker must be a number between 0"),
    (ClusterSpec("local", gpus_per_worker=float("nan")), "--gpus-per-worker must be a number"),
    (ClusterSpec("local", gpus_per_worker=1.5), "above 1 must be a whole number"),
    (ClusterSpec("head node:6379"), "--ray must be local, auto or a Ray address"),
    (ClusterSpec("10.0.0.5"), "--ray must be local, auto or a Ray address"),
    (ClusterSpec(None, workers=2), "need --ray"),
])
def test_bad_specs_are_one_line_errors(spec, says):
    with pytest.raises(EngineError) as err:
        spec.validate()
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("address", ["local", "auto", "10.0.0.5:6379", "ray://head.example:10001"])
def test_good_specs_validate(address):
    spec = ClusterSpec(address, workers=3, gpus_per_worker=0.25)
    spec.validate()
    assert spec.distributed and not ClusterSpec().distributed


def test_flags_make_the_spec_and_refuse_workers_without_ray():
    assert _parse([]) == ClusterSpec()
    assert _parse(["--ray", "auto", "--workers", "4", "--gpus-per-worker", "0.5"]) == ClusterSpec("auto", 4, 0.5)
    for argv, says in ((["--workers", "2"], "need --ray"), (["--gpus-per-worker", "1"], "need --ray"),
                       (["--ray", "local", "--workers", "-1"], "--workers must be")):
        with pytest.raises(EngineError, match=says):
            _parse(argv)


def test_ray_not_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    with pytest.raises(EngineError) as err:
        ClusterSpec("local").validate()
    assert str(err.value) == RAY_MISSING == "Ray is not installed: pip install 'aiba-studio[cluster]'"
    with pytest.raises(EngineError, match="Ray is not installed"):
        _parse(["--ray", "auto"])
    ClusterSpec().validate()  # the default (this process) does not need Ray


def test_local_mode_runs_in_order_here_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    seen = []
    items = [3, -1, 0, 5]
    outcomes = list(map_items(Squares(), items, ClusterSpec(), progress=lambda d, n: seen.append((d, n))))
    assert [o.index for o in outcomes] == [0, 1, 2, 3] and [o.item for o in outcomes] == items
    assert [o.result for o in outcomes] == [(9, os.getpid()), None, (0, os.getpid()), (25, os.getpid())]
    assert outcomes[1].error == "ValueError: negative item -1" and not outcomes[1].ok
    assert all(o.error is None for o in outcomes if o.index != 1)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert list(map_items(Squares(), [], ClusterSpec())) == []


def test_local_mode_cancel_stops_between_items():
    token = CancelToken()
    outcomes = map_items(Squares(), [1, 2, 3], ClusterSpec(), cancel=token)
    assert next(outcomes).result[0] == 1
    token.cancel()
    with pytest.raises(RunCancelled):
        next(outcomes)


def test_in_item_order_restores_the_order_of_any_completion_order():
    rng = random.Random(0)
    for n in (0, 1, 7, 30):
        outcomes = [ItemOutcome(i, f"item{i}", i * 10, None) for i in range(n)]
        shuffled = outcomes[:]
        rng.shuffle(shuffled)
        assert list(in_item_order(shuffled)) == outcomes
    # a gap (an outcome that never came) does not lose the ones after it
    assert [o.index for o in in_item_order([ItemOutcome(2, "c", 2, None), ItemOutcome(0, "a", 0, None)])] == [0, 2]


def test_cluster_session_without_ray_is_a_no_op(monkeypatch):
    from engine.cluster import cluster_session

    monkeypatch.setitem(sys.modules, "ray", None)
    with cluster_session(ClusterSpec()):
        assert [o.result[0] for o in map_items(Squares(), [2, 3], ClusterSpec())] == [4, 9]
    with pytest.raises(EngineError, match="Ray is not installed"), cluster_session(ClusterSpec("local")):
        pass
