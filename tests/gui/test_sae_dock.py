"""SAE feature browser dock on a real engine (tiny AudioLDM2): training job → TF-IDF ranking, a
feature's time × mel map, top-τ steering vector → steering dock; references are direct engine calls."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from engine.backends.registry import load_backend
from engine.interventions.prompt_sets import steering_set
from engine.interventions.sae import (
    collect_activations,
    feature_activations,
    sae_steering_vectors,
    tfidf_scores,
    train_sae,
)
from engine.site_labels import site_label
from tests.gui.conftest import TEST_MODEL

FIELDS = {"prompt": "guitar and drums", "seed": 1, "steps": 2, "guidance": 3.0, "duration": 0.25}
CONCEPT, LAYER_INDEX, EXPANSION, K, EPOCHS = "drums", 2, 2, 4, 3


@pytest.fixture(scope="module")
def reference():
    return load_backend(TEST_MODEL, device="cpu")


@pytest.fixture(scope="module")
def window(engine_window, request):
    """The shared window with the Run panel filled in and the model's layers known to the dock."""
    from pytestqt.qtbot import QtBot

    rd = engine_window.run_dock
    rd.model.setCurrentText(TEST_MODEL)
    rd.device.setCurrentText("cpu")
    rd.prompt.setPlainText(FIELDS["prompt"])
    rd.seed.setText(str(FIELDS["seed"]))
    rd.steps.setText(str(FIELDS["steps"]))
    rd.guidance.setText(str(FIELDS["guidance"]))
    rd.duration.setText(str(FIELDS["duration"]))
    with QtBot(request).waitSignal(engine_window.bridge.modelLoaded, timeout=120_000):
        engine_window.bridge.load(TEST_MODEL, "cpu")
    return engine_window


@pytest.fixture(scope="module")
def trained(window, request):
    """Train through the dock's own button: concept drums, one base, layer L2, seed 0."""
    from pytestqt.qtbot import QtBot

    dock = window.sae
    assert not dock.steer_button.isEnabled() and dock.steer_top() is None  # nothing trained yet
    dock.layer.setCurrentIndex(LAYER_INDEX)
    dock.concept.setCurrentText(CONCEPT)
    dock.n_bases.setValue(1)
    dock.expansion.setValue(EXPANSION)
    dock.k.setValue(K)
    dock.epochs.setValue(EPOCHS)
    dock.seeds.setText("0")
    with QtBot(request).waitSignal(dock.job.finished, timeout=120_000):
        QtBot(request).mouseClick(dock.job.run_button, Qt.MouseButton.LeftButton)
    return dock.result


def _positive_negative(reference):
    s = steering_set(CONCEPT, embedded=reference.family == "embedded", n_bases=1)
    return s.positive, s.negative


def _rows(acts, prompts) -> np.ndarray:
    """Row indices of the runs of ``prompts``, read off the run index by hand."""
    return np.concatenate([np.arange(*r["rows"]) for r in acts.runs if r["prompt"] in prompts])


def test_layer_list_is_the_models_cross_attention_sites(window, reference):
    cross = [s.name for s in reference.sites() if s.kind == "cross"]
    dock = window.sae
    assert len(cross) == 8
    assert [dock.layer.itemData(i) for i in range(dock.layer.count())] == cross
    assert dock.layer.itemText(LAYER_INDEX) == f"L{LAYER_INDEX}  {site_label(cross[LAYER_INDEX])}"


def test_training_matches_a_direct_engine_run(window, trained, reference):
    positive, negative = _positive_negative(reference)
    site = window.sae.layer.itemData(LAYER_INDEX)
    acts = trained.browser.acts
    assert (trained.concept, trained.positive, trained.negative) == (CONCEPT, positive, negative)
    assert acts.site == site and trained.model_id == reference.model_id
    assert [(r["prompt"], r["step"]) for r in acts.runs] == [(p, s) for p in positive + negative for s in (0, 1)]
    ref_acts = collect_activations(reference, positive + negative, site, FIELDS["steps"], FIELDS["guidance"],
                                   FIELDS["duration"], [0])
    np.testing.assert_allclose(acts.data, ref_acts.data, rtol=1e-5, atol=1e-6)
    log: list[float] = []
    ref_sae = train_sae(ref_acts.data, EXPANSION, K, EPOCHS, log=log)
    sae = trained.browser.sae
    assert (sae.n_features, sae.k) == (acts.data.shape[1] * EXPANSION, K)
    np.testing.assert_allclose(sae.W_dec.detach().numpy(), ref_sae.W_dec.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(trained.losses, log, rtol=1e-4)
    assert len(trained.losses) == EPOCHS and trained.losses[-1] < trained.losses[0]
    st = trained.stats
    assert (st["n_features"], st["k"], st["tokens"]) == (sae.n_features, K, acts.data.shape[0])
    assert window.sae.info.text().startswith(f"{site_label(site)}: {sae.n_features} features, k={K}")
    assert window.sae.info.toolTip() == site


def test_tfidf_ranking_equals_the_engines_scores_and_the_table_is_sorted(window, trained):
    dock = window.sae
    b = trained.browser
    codes = feature_activations(b.sae, b.acts.data)  # recomputed from the dock's SAE and activations
    np.testing.assert_allclose(b.codes, codes, rtol=1e-6, atol=1e-7)
    f_pos, f_neg = codes[_rows(b.acts, trained.positive)], codes[_rows(b.acts, trained.negative)]
    ref = tfidf_scores(f_pos, f_neg)
    hand = f_pos.mean(0) * np.log(1.0 + 1.0 / (f_neg.mean(0) + 1e-6))  # Eq. 6 by hand
    np.testing.assert_allclose(ref, hand, rtol=1e-5)
    np.testing.assert_allclose(trained.scores, ref, rtol=1e-6, atol=1e-9)
    assert ref.max() > 0  # some feature prefers the concept prompts
    ranked = dock.ranked_features()
    assert len(ranked) == min(b.sae.n_features, 200)
    assert ranked == np.argsort(-ref, kind="stable")[:len(ranked)].tolist()
    shown = [float(dock.feature_table.item(r, 1).text()) for r in range(dock.feature_table.rowCount())]
    assert np.all(np.diff(shown) <= 0)  # best TF-IDF first
    np.testing.assert_allclose(shown, ref[ranked], rtol=1e-3)  # "%.4g" in the table


def test_showing_a_feature_maps_it_with_low_frequency_at_the_bottom(window, trained, qtbot):
    dock = window.sae
    dock.raise_()
    # the best feature is selected after training; pick the second by a click on its row
    assert dock.feature == dock.ranked_features()[0]
    feature = dock.ranked_features()[1]
    rect = dock.feature_table.visualItemRect(dock.feature_table.item(1, 0))
    qtbot.waitUntil(dock.feature_table.isVisible, timeout=5000)
    qtbot.mouseClick(dock.feature_table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert dock.feature == feature
    b = trained.browser
    means = [b.codes[slice(*r["rows"]), feature].mean() for r in b.acts.runs]
    best = int(np.argsort(-np.asarray(means), kind="stable")[0])
    assert dock.examples.rowCount() == len(b.acts.runs)
    assert int(dock.examples.item(0, 0).data(Qt.ItemDataRole.UserRole)) == best
    assert dock.examples.item(0, 0).text() == b.acts.runs[best]["prompt"]
    grid = b.feature_map(feature, best)
    np.testing.assert_array_equal(dock.map_array, grid.astype(np.float32))
    np.testing.assert_array_equal(dock.image.image, grid.astype(np.float32))
    t, f = grid.shape
    assert t > 1 and f > 1
    # a second example row maps that run-step
    other = int(dock.examples.item(1, 0).data(Qt.ItemDataRole.UserRole))
    dock.examples.selectRow(1)
    np.testing.assert_array_equal(dock.map_array, b.feature_map(feature, other).astype(np.float32))
    # image column (time) 0 … T spans 0 … duration; mel band 0 sits below band F-1 on screen
    vb = dock.plot.getPlotItem().vb
    low = dock.image.mapToView(QPointF(0.5, 0.5))
    high = dock.image.mapToView(QPointF(t - 0.5, f - 0.5))
    assert low.x() == pytest.approx(0.5 * FIELDS["duration"] / t) and low.y() == pytest.approx(0.5)
    assert high.x() == pytest.approx((t - 0.5) * FIELDS["duration"] / t) and high.y() == pytest.approx(f - 0.5)
    assert vb.mapViewToScene(low).y() > vb.mapViewToScene(high).y()  # scene y grows downwards


def test_steer_with_top_tau_features_lands_in_the_steering_dock(window, trained, qtbot):
    dock, steering = window.sae, window.steering
    tau = 3
    dock.tau.setValue(tau)
    n_rows = len(steering.rows)
    with qtbot.waitSignal(dock.vectorsReady, timeout=5000) as blocker:
        qtbot.mouseClick(dock.steer_button, Qt.MouseButton.LeftButton)
    vec, label = blocker.args
    b = trained.browser
    site = b.acts.site
    codes = feature_activations(b.sae, b.acts.data)
    scores = tfidf_scores(codes[_rows(b.acts, trained.positive)], codes[_rows(b.acts, trained.negative)])
    ref = sae_steering_vectors(b.sae, scores, tau, site, trained.model_id, CONCEPT)
    top = np.argsort(-scores, kind="stable")[:tau]
    hand = b.sae.W_dec.detach().numpy()[:, top].sum(axis=1)  # Eq. 7 by hand
    assert vec.sites == ref.sites == [site] and vec.method == "sae"
    assert vec.meta["features"] == top.tolist() == dock.ranked_features()[:tau]
    np.testing.assert_allclose(vec.vectors[site], ref.vectors[site], rtol=1e-6)
    np.testing.assert_allclose(vec.vectors[site], hand, rtol=1e-5, atol=1e-6)
    assert label == f"{CONCEPT} (sae τ={tau})"
    assert len(steering.rows) == n_rows + 1
    row = steering.rows[-1]
    assert row.vectors is vec and row.name == label and row.enabled.text() == label
    assert site in steering.cross_sites


def test_bad_concept_shows_a_clear_message_and_keeps_the_result(window, trained, qtbot):
    dock = window.sae
    before = dock.result
    dock.concept.setCurrentText("kazoo")
    with qtbot.waitSignal(dock.job.failed, timeout=60_000) as blocker:
        assert dock.train() is not None  # the job starts, the engine refuses the concept
    message = blocker.args[0]
    assert message.startswith("SAE “kazoo” at ") and "no steering templates for 'kazoo': use one of" in message
    assert "drums" in message.split("use one of", 1)[1]
    assert dock.job.message.text() == message and "b00" in dock.job.message.styleSheet()
    assert window.status_label.text() == f"error: {message}"
    assert dock.result is before and dock.job.run_button.isEnabled()
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=10_000)
    dock.concept.setCurrentText("  ")
    with qtbot.waitSignal(dock.job.failed, timeout=1000) as blocker:
        assert dock.train() is None  # refused before any job
    assert "choose a concept" in blocker.args[0]
    dock.concept.setCurrentText(CONCEPT)
    dock.seeds.setText("x")
    with qtbot.waitSignal(dock.job.failed, timeout=1000):
        assert dock.train() is None
    assert dock.job.message.text() and dock.result is before
    dock.seeds.setText("0")
    assert dock.epochs.minimum() == 1  # zero epochs cannot be entered


def test_the_dock_and_the_sae_command_compute_the_same_sae(window, trained, tmp_path):
    """The panel trains through the engine's path of ``python main.py sae``: with the same options
    the command writes the same SAE weights and the same top TF-IDF features."""
    import json

    from engine.interventions.commands import SAEOptions, run_sae
    from engine.interventions.sae import TopKSAE

    site = window.sae.layer.itemData(LAYER_INDEX)
    out = run_sae(SAEOptions(model=TEST_MODEL, device="cpu", concept=CONCEPT, layer=site, out=str(tmp_path / "sae"),
                             n_bases=1, seeds="0", expansion=EXPANSION, k=K, epochs=EPOCHS, tau=5,
                             steps=FIELDS["steps"], guidance=FIELDS["guidance"], duration=FIELDS["duration"]))
    sae, meta = TopKSAE.load(out / "sae.safetensors")
    assert meta["site"] == site
    np.testing.assert_allclose(sae.W_dec.detach().numpy(), trained.browser.sae.W_dec.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    report = json.loads((out / "sae_report.json").read_text())
    top = np.argsort(-trained.scores)[:5]
    assert [f["feature"] for f in report["top_features"]] == [int(j) for j in top]
    np.testing.assert_allclose([f["tfidf"] for f in report["top_features"]], trained.scores[top], rtol=1e-5)
    np.testing.assert_allclose(report["loss_per_epoch"], trained.losses, rtol=1e-5)
