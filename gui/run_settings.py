"""The Run panel's model: the engine's typed :class:`~engine.recipe.Recipe` behind the fields.

The panel's widgets are views of a :class:`RunSettingsModel`: they hand it the text the user
types (:meth:`RunSettingsModel.set_field`), it parses the fields with the engine's
:func:`~engine.recipe.recipe_from_text` (the one set of limits every command checks) and keeps
the last valid recipe plus one message per field that is wrong; setting a recipe from code
(a reopened run or session) updates the widgets through ``fieldChanged``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.recipe import Recipe, recipe_from_text
from engine.types import GenerationRequest

FIELDS = ("model", "device", "prompt", "negative_prompt", "seed", "steps", "guidance", "duration")
DEFAULT_RECIPE = Recipe(prompt="bass and drums", seed=0, steps=25, guidance=3.0, duration=2.0)


def recipe_text(recipe: Recipe) -> dict[str, str]:
    """The text of each Run field for ``recipe`` (what :func:`recipe_from_text` reads back)."""
    return {"model": recipe.model, "device": recipe.device, "prompt": recipe.prompt,
            "negative_prompt": recipe.negative_prompt, "seed": str(recipe.seed), "steps": str(recipe.steps),
            "guidance": repr(float(recipe.guidance)), "duration": repr(float(recipe.duration))}


class RunSettingsModel(QObject):
    """The recipe of the next run: ``recipe`` (last valid), ``per_head``, the fields' ``text`` and
    ``errors`` (field → one-line message; empty when the text is a valid recipe)."""

    recipeChanged = Signal(object)  # the new valid Recipe
    errorsChanged = Signal(dict)  # field -> message ({} once every field is valid)
    fieldChanged = Signal(str, str)  # field, text: set from code, the views show it

    def __init__(self, recipe: Recipe = DEFAULT_RECIPE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.recipe = recipe.validate()
        self.per_head = True
        self.text = recipe_text(recipe)
        self.errors: dict[str, str] = {}

    @property
    def valid(self) -> bool:
        return not self.errors

    def message(self) -> str:
        """Every field's message, one per line ("" when valid)."""
        return "\n".join(self.errors.values())

    def set_field(self, name: str, text: str) -> None:
        """The user typed ``text`` into field ``name``: parse the fields again."""
        if name not in FIELDS:
            raise KeyError(f"no run field {name!r}: one of {', '.join(FIELDS)}")
        if self.text[name] != text:
            self.text[name] = text
            self._parse()

    def set_recipe(self, recipe: Recipe, per_head: bool | None = None) -> None:
        """Show ``recipe`` (e.g. a reopened run's): every field's text follows."""
        if per_head is not None:
            self.per_head = bool(per_head)
        for name, text in recipe_text(recipe).items():
            if self.text[name] != text:
                self.text[name] = text
                self.fieldChanged.emit(name, text)
        self._parse()

    def set_request(self, model: str, device: str, request: GenerationRequest) -> None:
        self.set_recipe(Recipe(model=model, device=device, **vars(request.settings())), request.per_head)

    def request(self, extra: dict[str, Any] | None = None) -> GenerationRequest | None:
        """The generation request of the current recipe with ``extra`` fields (capture,
        interventions, …); ``None`` while a field is wrong (see ``errors``)."""
        if self.errors:
            return None
        return GenerationRequest(**vars(self.recipe.settings()), **{"per_head": self.per_head, **(extra or {})})

    def _parse(self) -> None:
        recipe, errors = recipe_from_text(self.text)
        if recipe is not None and recipe != self.recipe:
            self.recipe = recipe
            self.recipeChanged.emit(recipe)
        if errors != self.errors:
            self.errors = errors
            self.errorsChanged.emit(dict(errors))
