"""``patch``, ``caa``, ``steer --eval-alphas``, ``sae`` and ``convergence --sweep`` with ``--ray local
--workers 2`` write exactly the files of the local run (tiny AudioLDM2; tiny Stable Audio for
steering, whose steered audio differs from the unsteered, unlike the tiny AudioLDM2's ~1e-7
waveform), on one local Ray cluster for the module. Each Ray run is checked to have sent every
work item through Ray, and each compared table to hold numbers that differ from one another."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import main

ray = pytest.importorskip("ray", reason="the optional 'cluster' extra (Ray) is not installed")

TINY = ["--model", "tiny:audioldm2", "--steps", "2", "--duration", "1.0"]
TINY_SA = ["--model", "tiny:stable_audio", "--steps", "2", "--duration", "0.2"]
RAY = ["--ray", "local", "--workers", "2"]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for every test here (the commands join it instead of starting their own)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture
def items_through_ray(cluster, monkeypatch):
    """How many item outcomes came back from Ray actors (the driver's calls of ``ray_map``)."""
    from engine.cluster import ray_pool

    count = {"items": 0, "calls": 0}
    real = ray_pool.ray_map

    def counting(*args, **kwargs):
        count["calls"] += 1
        for outcome in real(*args, **kwargs):
            count["items"] += 1
            yield outcome

    monkeypatch.setattr(ray_pool, "ray_map", counting)
    return count


def _same_files(local: Path, remote: Path) -> list[str]:
    """Every file of ``local`` equals its twin in ``remote``: JSON as data (``options.out`` aside),
    npz/safetensors array by array, anything else byte for byte; figures (png) are not compared."""
    names = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file() and p.suffix != ".png")
    assert names == sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file() and p.suffix != ".png")
    for name in names:
        a, b = local / name, remote / name
        if a.suffix == ".json":
            da, db = json.loads(a.read_text()), json.loads(b.read_text())
            for d in (da, db):
                d.get("options", {}).pop("out", None)
            assert da == db, name
        elif a.suffix in (".npz", ".safetensors"):
            from safetensors.numpy import load_file

            xa, xb = (np.load(a), np.load(b)) if a.suffix == ".npz" else (load_file(a), load_file(b))
            keys = list(xa.keys())
            assert keys == list(xb.keys()) and keys, name
            for key in keys:
                assert np.array_equal(xa[key], xb[key]), f"{name}:{key}"
        else:
            assert a.read_bytes() == b.read_bytes(), name
    return [str(n) for n in names]


def _both(tmp_path: Path, args, out_flag: str = "--out", suffix: str = "") -> tuple[Path, Path]:
    local, remote = tmp_path / f"local{suffix}", tmp_path / f"ray{suffix}"
    assert main.main([*args, out_flag, str(local)]) == 0
    assert main.main([*args, *RAY, out_flag, str(remote)]) == 0
    return local, remote


def test_patch_on_ray_writes_the_local_impacts(tmp_path, items_through_ray):
    args = ["patch", "--concept", "drums", "--prompt-set", "embedded", "--max-pairs", "1", "--seeds", "0,1",
            "--layers", "0,1,3", "--scorer", "band-template", *TINY]
    local, remote = _both(tmp_path, args)
    assert _same_files(local, remote) == ["patch_drums.json"]
    data = json.loads((remote / "patch_drums.json").read_text())
    assert data["sim_target_mean"] != data["sim_source_mean"]  # a sweep with something to compare
    assert items_through_ray == {"calls": 2, "items": 2 + 3 * 2}  # pairs x seeds, then layers x pairs x seeds


def test_caa_and_steer_evaluation_on_ray_write_the_local_files(tmp_path, items_through_ray):
    caa = ["caa", "--concept", "drums", "--positive", "drums and bass", "--negative", "piano and bass",
           "--layers", "0,1", "--seeds", "0,1", *TINY_SA]
    local, remote = tmp_path / "local.npz", tmp_path / "ray.npz"
    assert main.main([*caa, "--out", str(local)]) == 0
    assert main.main([*caa, *RAY, "--out", str(remote)]) == 0
    a, b = np.load(local), np.load(remote)
    assert sorted(a.files) == sorted(b.files) == ["__meta__", "v0", "v1"]
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert items_through_ray == {"calls": 1, "items": 4}  # 2 prompts x 2 seeds
    steer = ["steer", "--vectors", str(local), "--prompt", "bass", "--eval-alphas=-20,0,20", "--functional", "1",
             "--eval-prompt", "bass", "--eval-prompt", "piano", "--eval-seeds", "0,1", *TINY_SA]
    local_s, remote_s = _both(tmp_path, steer, suffix="_steer")
    assert _same_files(local_s, remote_s) == ["steer_eval.json"]
    rows = json.loads((remote_s / "steer_eval.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["scorer_perceptual_distance"] > 0 and r["preservation_mel_db"] > 0 for r in rows)
    assert len({a for r in rows for a in r["alignment_mean"]}) > 3
    # 4 unsteered runs, then 3 layer sets x 2 alphas (0 reuses the unsteered run) x 4 runs
    assert items_through_ray == {"calls": 3, "items": 4 + 4 + 3 * 2 * 4}


def test_sae_on_ray_writes_the_local_sae_and_scores(tmp_path, items_through_ray):
    args = ["sae", "--concept", "drums", "--layer", "2", "--n-bases", "2", "--epochs", "2", *TINY]
    local, remote = _both(tmp_path, args)
    assert _same_files(local, remote) == ["sae.safetensors", "sae_drums.npz", "sae_report.json"]
    from engine.interventions.caa import SteeringVectors

    vec = SteeringVectors.load(remote / "sae_drums.npz")
    assert items_through_ray == {"calls": 1, "items": len(vec.positive) + len(vec.negative)}  # one seed


def test_convergence_sweep_on_ray_writes_the_local_tables(tmp_path, items_through_ray):
    args = ["convergence", "--prompt", "a hammer", "--sweep", "--freeze-steps", "0,2", "--sites", "0,1,2",
            "--model", "tiny:audioldm2", "--steps", "4", "--duration", "0.32"]
    local, remote = _both(tmp_path, args)
    names = _same_files(local, remote)
    assert {"freeze_sweep.npz", "freeze_sweep.csv", "convergence.json", "summary.json"} <= set(names)
    mel = np.load(remote / "freeze_sweep.npz")["mel_distance"]
    assert mel.shape == (3, 2) and np.all(np.isfinite(mel)) and mel.max() > 0
    assert items_through_ray == {"calls": 1, "items": 3 * 2}


def test_ray_flags_need_the_part_that_runs_on_ray(tmp_path, capsys):
    assert main.main(["convergence", "--prompt", "x", *TINY[:2], "--steps", "4", *RAY,
                      "--out", str(tmp_path / "c")]) == 2
    assert "--sweep" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main.main(["caa", "--concept", "drums", *TINY, "--workers", "2", "--out", str(tmp_path / "v.npz")]) == 2
    assert "need --ray" in capsys.readouterr().err and not (tmp_path / "v.npz").exists()
