"""The Run panel's settings model (gui.run_settings): the engine's Recipe round-trips through the
fields' text and the dock's widgets, a wrong field gives the engine's one-line message and no
request, and the window reads the recipe from the model."""

from __future__ import annotations

import pytest

from engine.recipe import Recipe
from engine.types import GenerationRequest
from gui.docks.run_dock import RunDock
from gui.run_settings import RunSettingsModel, recipe_text

RECIPE = Recipe(prompt="solo piano, soft", negative_prompt="noise", seed=4294967295, steps=7, guidance=0.1,
                duration=1.0 / 3.0, model="tiny:audioldm2", device="cpu")


def test_a_recipe_round_trips_through_the_fields_text(qapp):
    model = RunSettingsModel()
    changed = []
    model.recipeChanged.connect(changed.append)
    model.set_recipe(RECIPE)
    assert model.recipe == RECIPE and model.errors == {} and changed == [RECIPE]
    assert model.text == recipe_text(RECIPE) and model.text["duration"] == repr(1.0 / 3.0)
    request = model.request({"per_head": False})
    assert request == GenerationRequest(prompt="solo piano, soft", negative_prompt="noise", seed=4294967295,
                                        steps=7, guidance=0.1, duration=1.0 / 3.0, per_head=False)
    again = RunSettingsModel()
    again.set_request(RECIPE.model, RECIPE.device, request)
    assert again.recipe == RECIPE and again.per_head is False


def test_a_wrong_field_gives_the_engines_message_and_no_request(qapp):
    model = RunSettingsModel(RECIPE)
    errors = []
    model.errorsChanged.connect(errors.append)
    model.set_field("steps", "0")
    model.set_field("guidance", "lots")
    assert not model.valid and model.request() is None
    assert model.errors == {"steps": "steps must be between 1 and 1000 (got 0)",
                            "guidance": "guidance must be a number (got “lots”)"}
    assert model.message().splitlines() == list(model.errors.values()) and len(errors) == 2
    assert model.recipe == RECIPE  # the last valid recipe is kept
    model.set_field("steps", "12")
    model.set_field("guidance", "2")
    assert model.valid and errors[-1] == {} and model.recipe.steps == 12 and model.recipe.guidance == 2.0
    with pytest.raises(KeyError):
        model.set_field("stepz", "3")


def test_the_dock_is_a_view_of_the_model(qtbot):
    dock = RunDock()
    qtbot.addWidget(dock)
    s = dock.settings
    dock.steps.setText("9")  # typing → model
    dock.prompt.setPlainText("  drums  ")
    assert s.recipe.steps == 9 and s.recipe.prompt == "drums"
    s.set_recipe(RECIPE)  # model → widgets
    assert (dock.prompt.toPlainText(), dock.negative.text(), dock.seed.text(), dock.steps.text()) == \
        ("solo piano, soft", "noise", "4294967295", "7")
    assert dock.model.currentText() == "tiny:audioldm2" and float(dock.duration.text()) == 1.0 / 3.0
    emitted = []
    dock.generateRequested.connect(lambda *a: emitted.append(a))
    dock.seed.setText("-1")
    dock.generate_button.click()
    assert emitted == [] and dock.message.text() == "seed must be between 0 and 4294967295 (got -1)"
    dock.seed.setText("5")
    dock.generate_button.click()
    (model, device, request), = emitted
    assert (model, device, request.seed, request.steps) == ("tiny:audioldm2", "cpu", 5, 7)


def test_the_window_reads_the_recipe_from_the_model(make_window, isolated_settings):
    window = make_window()
    window.run_dock.settings.set_recipe(RECIPE)
    model, device, request = window.panel_recipe()
    assert (model, device) == (RECIPE.model, RECIPE.device)
    assert vars(request.settings()) == vars(RECIPE.settings())
    session = window.current_session()
    assert session.model == RECIPE.model and session.request.steps == RECIPE.steps
