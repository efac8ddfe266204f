"""``map_items`` and ``eval`` on one local Ray cluster (2 CPUs, shared by the module's tests).

Checked: results stream back as they finish but equal the in-process ones; an item's error is an
error outcome; a worker that dies has its item retried on a fresh worker (and a poison item ends
as an error outcome); ``eval`` on two rendered tracks with ``--ray local --workers 2`` writes the
same tables and per-item files as the in-process run, also when a worker dies mid-run, and
``head-select`` on the workers writes the in-process masks and tables.
"""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray

from engine.cluster import ClusterSpec, cluster_session, map_items
from engine.cluster.ray_pool import MAX_RETRIES, connect
from engine.errors import EngineError, RunCancelled
from engine.evaluation import EvalOptions, run_eval, run_head_selection
from engine.evaluation import runner as eval_runner
from engine.types import CancelToken
from tests.engine.cluster_jobs import DiesOnce, FailsSetup, Poison, SlowFirst, die_first

TWO = ClusterSpec("local", workers=2)


@pytest.fixture(scope="module")
def cluster():
    assert connect(TWO)  # started here; map_items below joins it and leaves it running
    yield
    ray.shutdown()


def test_results_stream_as_they_finish_and_equal_local_ones(cluster):
    items = list(range(8))
    seen = []
    got = list(map_items(SlowFirst(), items, TWO, progress=lambda d, n: seen.append((d, n))))
    local = {o.index: (o.result[0] if o.result else None, o.error) for o in map_items(SlowFirst(), items, ClusterSpec())}
    assert sorted(o.index for o in got) == items
    assert {o.index: (o.result[0] if o.result else None, o.error) for o in got} == local
    assert local[5] == (None, "ValueError: five is refused") and local[3] == (9, None)
    assert [o.index for o in got][0] != 0  # item 0 (slow) was overtaken: outcomes come as they finish
    assert seen == [(n, 8) for n in range(1, 9)]
    workers = {(o.result[1], o.result[2]) for o in got if o.result}
    assert len({pid for pid, _ in workers}) == 2 and len(workers) == 2  # two actors, one setup each
    assert os.getpid() not in {pid for pid, _ in workers}


def _workers(outcomes) -> set[tuple[int, float]]:
    """(pid, setup time) of the actors that ran ``outcomes``: one pair per setup."""
    return {(o.result[1], o.result[2]) for o in outcomes if o.result}


def _gone(pids: set[int], timeout_s: float = 20.0) -> bool:
    end = time.time() + timeout_s
    while time.time() < end:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_a_session_keeps_a_jobs_workers_between_rounds(cluster):
    job = SlowFirst()
    with cluster_session(TWO):
        first = list(map_items(job, [1, 2, 3, 4], TWO))
        second = list(map_items(job, [6, 7, 8, 9], TWO))  # the next round: the same two workers
        for _ in map_items(job, [1, 2, 3, 4], TWO):
            break  # a round left unfinished: its workers are not kept…
        after = list(map_items(job, [1, 2], TWO))  # …the next round sets up anew
        other = list(map_items(SlowFirst(), [1, 2], TWO))  # another job: the kept workers make room
        kept = {pid for pid, _ in _workers(other)}
        assert _gone({pid for pid, _ in _workers(after)})
    assert len(_workers(first)) == 2 and _workers(second) == _workers(first)
    assert not _workers(after) & _workers(first) and not _workers(other) & _workers(after)
    assert _gone(kept)  # the session's end kills what it kept
    with cluster_session(TWO):
        outer = list(map_items(job, [1, 2], TWO))
        with cluster_session(TWO):  # e.g. eval's head selection inside eval's session
            inner = list(map_items(SlowFirst(), [1, 2], TWO))  # the outer session's kept workers make room
    assert _workers(inner) and not _workers(inner) & _workers(outer)
    a, b = list(map_items(job, [1, 2], TWO)), list(map_items(job, [1, 2], TWO))
    assert not _workers(a) & _workers(b)  # outside a session every call has its own workers


def test_a_dead_worker_is_replaced_and_its_item_retried(cluster, tmp_path):
    marker = tmp_path / "died"
    got = list(map_items(DiesOnce(str(marker)), list(range(6)), TWO))
    assert marker.exists()  # a worker did die
    assert sorted((o.index, o.result[0], o.error) for o in got) == [(i, i + 100, None) for i in range(6)]


def test_an_item_that_kills_every_worker_becomes_an_error_outcome(cluster):
    got = {o.index: o for o in map_items(Poison(), list(range(4)), TWO)}
    assert sorted(got) == [0, 1, 2, 3]
    assert [got[i].result for i in (0, 1, 3)] == [0, -1, -3]
    assert got[2].result is None
    assert got[2].error.startswith(f"WorkerDied: the worker running it died {MAX_RETRIES + 1} times")


def test_a_worker_that_cannot_set_up_is_one_line(cluster):
    with pytest.raises(EngineError) as err:
        list(map_items(FailsSetup(), [1, 2, 3], TWO))
    assert str(err.value) == "a Ray worker could not set up: ValueError: no weights at /models/x on this node"


def test_cancel_stops_submitting_and_frees_the_workers(cluster):
    token = CancelToken()
    got = []
    with pytest.raises(RunCancelled):
        for outcome in map_items(SlowFirst(), list(range(1, 60)), TWO, cancel=token):
            got.append(outcome)
            token.cancel()
    assert len(got) == 1
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # the actors were killed
    assert len(list(map_items(SlowFirst(), [1, 2], TWO))) == 2  # and the cluster still works


# ----- eval: same tables and per-item files as the in-process run -----

@pytest.fixture(scope="module")
def tracks(tmp_path_factory) -> Path:
    from engine.data.render import render_dataset

    root = tmp_path_factory.mktemp("slakh")
    render_dataset(root, 2, seed=7, duration_s=4.0, source="patterns")
    return root


def _options(tracks: Path, out: Path, cluster: ClusterSpec) -> EvalOptions:
    return EvalOptions(dataset=str(tracks), out=str(out), steps=2, duration=1.0, grid=(32, 16),
                       classes=["Drums", "Bass"], figures=False, cluster=cluster)


@pytest.fixture(scope="module")
def local_eval(tracks, tmp_path_factory) -> Path:
    return run_eval(_options(tracks, tmp_path_factory.mktemp("local") / "out", ClusterSpec()))


def _records(folder: Path) -> list[dict]:
    lines = (folder / "items.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines]


def assert_same_outputs(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert any(f.suffix == ".csv" for f in files) and any(f.parts[0] == "heads" for f in files)
    assert _records(a) == _records(b) and len(_records(a)) >= 4  # same items, same order
    for f in files:
        if f.suffix == ".npz":  # the zip's timestamps differ; the arrays must not
            with np.load(a / f) as x, np.load(b / f) as y:
                assert sorted(x.files) == sorted(y.files), f
                for k in x.files:
                    assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k], equal_nan=True), (f, k)
        elif f.name not in ("items.jsonl", "report.json"):
            assert filecmp.cmp(a / f, b / f, shallow=False), f"{f} differs"
    ra, rb = (json.loads((d / "report.json").read_text().replace(str(d), "OUT")) for d in (a, b))
    assert ra["table1"] == rb["table1"] and ra["head_selection"] == rb["head_selection"]
    assert ra["items"] == rb["items"] and ra["errors"] == rb["errors"]


def test_eval_on_two_workers_writes_the_in_process_files(cluster, tracks, local_eval, tmp_path):
    out = run_eval(_options(tracks, tmp_path / "out", TWO))
    assert_same_outputs(local_eval, out)


def test_learned_layer_weights_are_fitted_on_the_workers_to_the_same_weights(cluster, tracks, tmp_path,
                                                                             monkeypatch):
    """``--weighting learned`` on Ray: the held-out track's generations run on the workers (the
    driver generates nothing), and the weights, items and tables equal the in-process run's."""
    def learned(out: Path, cluster_spec: ClusterSpec) -> EvalOptions:
        return dataclasses.replace(_options(tracks, out, cluster_spec), weighting="learned",
                                   fit_tracks=1, per_head=False)

    local = run_eval(learned(tmp_path / "local", ClusterSpec()))
    driver_generations = []
    real = eval_runner.Evaluator.run
    monkeypatch.setattr(eval_runner.Evaluator, "run",
                        lambda self, *a, **k: driver_generations.append(1) or real(self, *a, **k))
    remote = run_eval(learned(tmp_path / "ray", TWO))
    assert not driver_generations  # the fit's and the items' generations all ran on the workers
    weights = [json.loads((d / "layer_weights.json").read_text()) for d in (local, remote)]
    assert weights[0] == weights[1] and weights[0]["items"]
    assert _records(local) == _records(remote) and _records(local)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (local, remote))
    assert ra["table1"] == rb["table1"]
    assert ra["generate_calls_this_session"] == rb["generate_calls_this_session"] > len(_records(local))


def test_an_interrupted_local_eval_resumes_on_ray_with_the_same_files(cluster, tracks, local_eval, tmp_path):
    """Resuming is the driver's: the items already in items.jsonl are skipped, the rest go to the
    workers, and the finished folder equals the uninterrupted local run's."""
    folder = tmp_path / "out"
    shutil.copytree(local_eval, folder)
    lines = (folder / "items.jsonl").read_text().splitlines(keepends=True)
    kept = len(lines) // 2
    (folder / "items.jsonl").write_text("".join(lines[:kept]))
    (folder / "report.json").unlink()
    run_eval(_options(tracks, folder, TWO))
    report = json.loads((folder / "report.json").read_text())
    assert report["new_items_this_session"] == len(lines) - kept > 0
    assert_same_outputs(local_eval, folder)


def test_head_select_on_two_workers_writes_the_in_process_files(cluster, local_eval, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(local_eval, folder)
    for f in (folder / "heads" / "masks").iterdir():
        f.unlink()
    run_head_selection(folder, figures=False, cluster=TWO)
    written = [*(folder / "heads" / "masks").iterdir(), *folder.glob("heads_comparison_*"), *folder.glob("weakening_*")]
    assert len(written) >= 6
    for f in written:
        assert filecmp.cmp(f, local_eval / f.relative_to(folder), shallow=False), f"{f.name} differs"


def test_eval_survives_a_worker_dying_mid_run_with_the_same_numbers(cluster, tracks, local_eval, tmp_path,
                                                                     monkeypatch):
    marker = tmp_path / "died"

    monkeypatch.setattr(eval_runner, "EvalJob", functools.partial(DyingEvalJob, marker=str(marker)))
    out = run_eval(_options(tracks, tmp_path / "out", TWO))
    assert marker.exists()
    assert_same_outputs(local_eval, out)


@dataclass(frozen=True)
class DyingEvalJob(eval_runner.EvalJob):
    """The eval's job, but the first worker to run an item dies on it."""

    marker: str = ""

    def run(self, ev, item):
        die_first(self.marker)
        return super().run(ev, item)
