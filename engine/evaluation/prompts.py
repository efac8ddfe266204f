"""Prompt templates of the evaluation: one class word and a list of templates per instrument class.

The YAML file (default ``resources/prompts/eval_templates.yaml``) holds::

    default: ["{inst}", "a {inst} playing"]
    classes:
      Bass: {word: bass}                      # uses the default templates
      Drums: {word: drums, templates: ["{inst}"]}

``word`` names the class in the prompt and is the keyword whose tokens are pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.paths import resources_dir
from engine.types import EngineError

DEFAULT_TEMPLATES_PATH = (
    resources_dir() / "prompts" / "eval_templates.yaml"
)


@dataclass(frozen=True)
class ClassPrompts:
    """The class word and the prompts of one instrument class, in template order."""

    inst_class: str
    word: str
    templates: tuple[str, ...]

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(t.format(inst=self.word) for t in self.templates)


def _check_template(template: object, where: str) -> str:
    if not isinstance(template, str) or "{inst}" not in template:
        raise EngineError(f"template {template!r} in {where} must be a string containing {{inst}}")
    try:
        template.format(inst="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise EngineError(
            f"template {template!r} in {where} has a bad placeholder ({exc}): use only {{inst}}"
        ) from exc
    return template


def load_templates(path: str | Path | None = None) -> dict[str, ClassPrompts]:
    """Read the template file; every class gets a word and at least one template."""
    p = Path(path) if path is not None else DEFAULT_TEMPLATES_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EngineError(f"cannot read prompt templates {p} ({exc.strerror}): pass --templates FILE") from exc
    except yaml.YAMLError as exc:
        raise EngineError(f"prompt templates {p} are not valid YAML: fix the file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict) or not data["classes"]:
        raise EngineError(f"prompt templates {p} need a non-empty 'classes' mapping")
    default = data.get("default") or []
    if not isinstance(default, list):
        raise EngineError(f"'default' in {p} must be a list of templates")
    default = [_check_template(t, f"{p} default") for t in default]
    out: dict[str, ClassPrompts] = {}
    for name, entry in data["classes"].items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise EngineError(f"class {name} in {p} must be a mapping with 'word' (and 'templates')")
        word = str(entry.get("word") or str(name).lower()).strip()
        templates = entry.get("templates", default)
        if not isinstance(templates, list) or not templates:
            raise EngineError(f"class {name} in {p} has no templates: add 'templates' or 'default'")
        out[str(name)] = ClassPrompts(
            str(name), word, tuple(_check_template(t, f"{p} class {name}") for t in templates)
        )
    return out


def class_prompts(templates: dict[str, ClassPrompts], inst_class: str) -> ClassPrompts:
    """The prompts of one class, or a clear error naming the classes the file has."""
    if inst_class not in templates:
        raise EngineError(
            f"no prompt templates for class {inst_class!r}: add it to the templates file "
            f"(it has {', '.join(templates)})"
        )
    return templates[inst_class]
