"""ACE-Step at any duration: diffusers' pipeline mis-sizes its latents when ``(n / rate) · rate``
is not exactly ``n`` in floating point (0.25 s and 1.1 s at 25 frames/s); the backend hands it the
next duration where the round trip is exact, and its planned lattice matches what runs."""

from __future__ import annotations

import math

import pytest

from engine.backends.registry import load_backend
from engine.types import GenerationRequest


@pytest.fixture(scope="module")
def ace():
    return load_backend("tiny:ace_step")


@pytest.mark.parametrize("duration", [0.25, 1.1, 0.33, 1.0])
def test_every_duration_runs_and_the_planned_lattice_is_the_run_lattice(ace, duration):
    rate = ace.pipe.latents_per_second
    snapped = ace.pipeline_duration(duration)
    frames = round(snapped * rate)
    assert duration <= snapped < duration + 3 / rate  # at most a few 40 ms frames longer
    assert math.ceil((frames / rate) * rate) == frames  # the pipeline's own round trip is exact
    result = ace.generate(GenerationRequest(prompt="bass", steps=1, duration=duration))
    assert {lat for lat in result.lattices.values()} == {(ace.queries(duration), 1)}
    assert len(result.audio) / result.sample_rate == pytest.approx(snapped, abs=1 / rate)
