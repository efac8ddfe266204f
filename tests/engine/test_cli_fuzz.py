"""Property-based tests of the numeric options of ``analyze``, ``convergence`` and ``steer``:
any value (at and past the limits of :data:`engine.recipe.LIMITS`, NaN, inf, negative, 2**64,
empty or huge strings) ends in a valid run or a clean exit 2 with one line, never a traceback.

The parse + validate layer is checked in-process for many values; a few drawn values go through
``python main.py`` in a subprocess with the tiny model, one step and 0.1 s.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.commands import REGISTRY
from engine.errors import EngineError
from engine.recipe import LIMITS
from main import build_parser

ROOT = Path(__file__).resolve().parents[2]

OPTIONS = {
    "analyze": ["--seed", "--steps", "--guidance", "--duration", "--memory-budget-mb", "--lsac-budget-mb", "--grid"],
    "convergence": ["--seed", "--steps", "--guidance", "--duration", "--late-fraction", "--quantile", "--budget-mb",
                    "--freeze-steps", "--seeds"],
    "steer": ["--seed", "--steps", "--guidance", "--duration", "--alpha", "--eval-alphas", "--eval-seeds"],
}
EDGES = [
    str(LIMITS.steps_max), str(LIMITS.steps_max + 1), str(LIMITS.seed_max), str(LIMITS.seed_max + 1),
    f"{LIMITS.guidance_max:g}", repr(LIMITS.guidance_max + 1e-9), f"{LIMITS.duration_max_s:g}",
    f"{LIMITS.duration_max_s * 2:g}", repr(LIMITS.memory_budget_max_mb), repr(LIMITS.memory_budget_max_mb * 2),
    "200", "200.0001", "-200", "nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "-0", "0.0", str(2**64),
    str(-(2**64)), "", " ", "x" * 100_000, "9" * 5000, "0x10", "1_000", " 5 ", "\u0663", "1,2,nan", ",,", "3x",
    "128x0", "0x0", "99999x99999", "1e-320", "1.5",
]
VALUES = st.one_of(st.sampled_from(EDGES), st.integers(-(2**70), 2**70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8))


def base_args(command: str, out: str, vectors: str) -> list[str]:
    """The shortest valid command line of ``command`` (the tiny model, 1 step, 0.1 s)."""
    args = [command, "--model", "tiny:audioldm2", "--steps", "1", "--duration", "0.1", "--out", out]
    if command in ("analyze", "convergence", "steer"):
        args += ["--prompt", "a bass"]
    if command == "steer":
        args += ["--vectors", vectors]
    if command == "analyze":
        args += ["--no-figures"]
    return args


def with_option(args: list[str], option: str, value: str, joined: bool) -> list[str]:
    out = list(args)
    if option in out:
        i = out.index(option)
        del out[i:i + 2]
    return [*out, f"{option}={value}"] if joined else [*out, option, value]


def build_outcome(argv: list[str]) -> tuple[str, object]:
    """``("argparse" | "EngineError" | "valid", options)`` of parsing and validating ``argv``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and "error" in lines[0] and len(lines[0]) < 2000, err.getvalue()[:500]
            return "argparse", None
    try:
        options = REGISTRY[args.command].build(args)
    except EngineError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return "EngineError", None
    return "valid", options


def assert_within_limits(options: object) -> None:
    """Options that validated hold only values the limits allow."""
    assert 0 <= options.seed <= LIMITS.seed_max and 1 <= options.steps <= LIMITS.steps_max
    assert 0 <= options.guidance <= LIMITS.guidance_max and 0 < options.duration <= LIMITS.duration_max_s
    for name in ("late_fraction", "quantile", "budget_mb", "memory_budget_mb"):
        value = getattr(options, name, None)
        if value is not None:
            assert math.isfinite(value) and value >= 0, (name, value)
    lsac = getattr(options, "lsac", None)
    if lsac is not None:
        assert math.isfinite(lsac.budget_mb) and lsac.budget_mb > 0


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(OPTIONS)), data=st.data(), value=VALUES, joined=st.booleans(),
       lsac=st.booleans())
def test_numeric_options_parse_and_validate_cleanly(command, data, value, joined, lsac):
    option = data.draw(st.sampled_from(OPTIONS[command]))
    argv = with_option(base_args(command, "unused-out", "unused.npz"), option, value, joined)
    if lsac and command == "analyze":
        argv += ["--lsac", "safe"]
    kind, options = build_outcome(argv)
    event(f"{command}: {kind}")
    if kind == "valid":
        assert_within_limits(options)


@pytest.fixture(scope="module")
def vectors_file(ldm, tmp_path_factory) -> Path:
    from engine.interventions.caa import SteeringVectors
    from engine.interventions.layers import cross_sites

    vecs = {s: np.full(ldm.denoiser.get_submodule(s).to_out[0].out_features, 0.1, np.float32)
            for s in cross_sites(ldm)}
    return SteeringVectors(vecs, "tiny:audioldm2", concept="bass").save(tmp_path_factory.mktemp("v") / "v.npz")


SUBPROCESS_VALUES = st.sampled_from(["nan", "inf", "-1", str(2**64), "", "x" * 10_000, "1e309", "201",
                                     str(LIMITS.steps_max + 1), str(LIMITS.seed_max + 1), "1", "0.1", "0"])


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(OPTIONS)), data=st.data(), value=SUBPROCESS_VALUES)
def test_main_exits_0_or_2_with_one_line(vectors_file, command, data, value):
    option = data.draw(st.sampled_from([o for o in OPTIONS[command] if o not in ("--steps", "--duration")]
                                       + ["--steps", "--duration"]))
    if option in ("--steps", "--duration") and value not in ("1", "0.1", "0", "nan", "-1", "", "inf"):
        value = "nan"  # a large valid step count or duration would make a long run
    with tempfile.TemporaryDirectory() as tmp:
        argv = with_option(base_args(command, str(Path(tmp) / "out"), str(vectors_file)), option, value, True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "-q", *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    event(f"{command}: exit {proc.returncode}")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode in (0, 2), (proc.returncode, proc.stderr[-2000:])
    if proc.returncode == 2:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line]
        assert len(errors) == 1 and len(errors[0]) < 2000, proc.stderr[-2000:]
