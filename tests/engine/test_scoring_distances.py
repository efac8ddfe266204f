"""The preservation measures: Fréchet distance against scipy's sqrtm and closed forms; the
LPAPS-style distance against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from engine.scoring.distances import frechet_distance, frechet_from_stats, perceptual_distance
from engine.types import EngineError


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def _scipy_frechet(mu1, c1, mu2, c2) -> float:
    """The textbook formula with scipy's general matrix square root (an independent reference)."""
    covmean = linalg.sqrtm(c1 @ c2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(np.real(covmean)))


@pytest.mark.parametrize("d", [1, 3, 8, 32])
def test_frechet_equals_the_scipy_sqrtm_reference_on_known_covariances(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _spd(rng, d), _spd(rng, d)
    assert frechet_from_stats(mu1, c1, mu2, c2) == pytest.approx(_scipy_frechet(mu1, c1, mu2, c2), rel=1e-9, abs=1e-9)


def test_frechet_of_samples_matches_the_reference_on_the_sample_statistics_and_the_true_value():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -2.0, 0.5, 0.0])
    c1, c2 = _spd(rng, d), _spd(rng, d)
    a = rng.multivariate_normal(mu1, c1, size=40000)
    b = rng.multivariate_normal(mu2, c2, size=40000)
    ref_samples = _scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    got = frechet_distance(a, b)
    assert got == pytest.approx(ref_samples, rel=1e-9)
    assert got == pytest.approx(_scipy_frechet(mu1, c1, mu2, c2), rel=0.03)  # sampling error only


def test_frechet_closed_form_for_diagonal_covariances_and_zero_for_identical_sets():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # 5 + 1 + 0 + 4
    assert frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected) == 10.0
    x = np.random.default_rng(1).normal(size=(50, 6))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_with_fewer_samples_than_dimensions_is_finite_and_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 16)), rng.normal(loc=0.3, size=(7, 16))
    got = frechet_distance(a, b)
    ref = _scipy_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(got) and got == pytest.approx(ref, rel=1e-5)


def test_frechet_refuses_bad_input():
    with pytest.raises(EngineError, match="at least two"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(EngineError, match="same D"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


def test_perceptual_distance_against_hand_computed_values():
    x = np.zeros((2, 1, 2))
    x[:, 0, 0], x[:, 0, 1] = [3.0, 4.0], [1.0, 0.0]  # unit vectors (0.6, 0.8) and (1, 0)
    y = np.zeros((2, 1, 2))
    y[:, 0, 0], y[:, 0, 1] = [0.0, 5.0], [-2.0, 0.0]  # (0, 1) and (-1, 0)
    # patch 1: (0.6, -0.2) -> 0.40; patch 2: (2, 0) -> 4; mean 2.2
    assert perceptual_distance([x], [y]) == pytest.approx(2.2)
    # two layers average; scaling a clip's activations changes nothing (unit-normalised per patch)
    assert perceptual_distance([x, x], [y, 7 * x]) == pytest.approx(1.1)
    # clips of different length are cropped to the shorter
    longer = np.concatenate([y, np.ones((2, 3, 2))], axis=1)
    assert perceptual_distance([x], [longer]) == pytest.approx(2.2)
    with pytest.raises(EngineError, match="same"):
        perceptual_distance([x], [x, x])
