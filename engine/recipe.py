"""The run recipe: one frozen, typed description of a generation, and its limits.

Every entry point (the CLI commands, the GUI, ``eval``, patching, steering, convergence) builds a
:class:`Recipe` (model, device and the :class:`RunSettings`) and calls :meth:`Recipe.validate`
before anything is loaded or written. The limits are in :data:`LIMITS` and in
``docs/RELIABILITY.md``; each violation raises one :class:`~engine.types.EngineError` line that
names the setting and its allowed range.

Typed parts of a generation request that used to travel in a free-form dict:
:class:`LsacSpec` (layer-selective attention caching), :data:`NanPolicy` and :data:`HeadMask`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from engine.errors import EngineError

NanPolicy = Literal["warn", "raise"]
NAN_POLICIES: tuple[str, ...] = ("warn", "raise")

LSAC_CHOICES: tuple[str, ...] = ("off", "safe", "balanced", "aggressive")
LSAC_CACHE_DTYPES: tuple[str, ...] = ("model", "float32", "bfloat16", "float16")

HeadMask = dict[str, tuple[bool, ...]]
"""Site name -> one flag per head; ``False`` heads are ablated in the site's output."""


@dataclass(frozen=True)
class Limits:
    """The one set of bounds every entry point checks (documented in docs/RELIABILITY.md)."""

    seed_max: int = 2**32 - 1  # numpy's legacy seeding and torch's generator both accept it
    steps_max: int = 1000
    guidance_max: float = 100.0
    duration_max_s: float = 600.0
    prompt_max_chars: int = 2000
    memory_budget_max_mb: float = 1_048_576.0  # 1 TiB
    grid_max: int = 4096
    steer_alpha_max: float = 200.0  # |α| of steering (TADA sweeps ±100 with unit vectors; twice that)


LIMITS = Limits()

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d{1,3})?)$")


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]``, else one line naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise EngineError(f"{name} must be a whole number between {low} and {high} (got {value!r})")
    if not low <= value <= high:
        raise EngineError(f"{name} must be between {low} and {high} (got {value})")
    return value


def check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a finite float within the range (``low`` excluded when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EngineError(f"{name} must be a number (got {value!r})")
    value = float(value)
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or value > high:
        lower = f"above {low:g}" if low_open else f"at least {low:g}"
        raise EngineError(f"{name} must be a finite number {lower} and at most {high:g} (got {value!r})")
    return value


def check_text(name: str, value: Any, *, required: bool, max_chars: int = LIMITS.prompt_max_chars) -> str:
    """A string of at most ``max_chars`` characters; non-blank when ``required``."""
    if not isinstance(value, str):
        raise EngineError(f"{name} must be text (got {type(value).__name__})")
    if required and not value.strip():
        raise EngineError(f"empty {name}: give a description, e.g. 'bass and drums'")
    if len(value) > max_chars:
        raise EngineError(f"{name} is {len(value)} characters long; the limit is {max_chars}: shorten it")
    if "\x00" in value:
        raise EngineError(f"{name} contains a NUL character: remove it")
    return value


def check_device(value: Any) -> str:
    """``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise EngineError(f"device must be cpu, cuda, cuda:N or mps (got {value!r})")
    return value


@dataclass(frozen=True)
class RunSettings:
    """What determines one generation's numbers, apart from the model (the shared run settings)."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 3.0
    duration: float = 4.0

    def validate_settings(self, *, require_prompt: bool = True) -> None:
        """Check every setting against :data:`LIMITS`; raise one EngineError line on the first."""
        check_text("prompt", self.prompt, required=require_prompt)
        check_text("negative prompt", self.negative_prompt, required=False)
        check_int("seed", self.seed, 0, LIMITS.seed_max)
        check_int("steps", self.steps, 1, LIMITS.steps_max)
        check_float("guidance", self.guidance, 0.0, LIMITS.guidance_max)
        check_float("duration", self.duration, 0.0, LIMITS.duration_max_s, low_open=True)

    def settings(self) -> RunSettings:
        """Only the run settings (drops the fields of subclasses)."""
        return RunSettings(**{f.name: getattr(self, f.name) for f in fields(RunSettings)})


@dataclass(frozen=True)
class Recipe(RunSettings):
    """The run settings plus the model and the device: what every command and the GUI take.

    ``model`` is ``embedded``, ``tiny:<family>``, a hub id or a local ``save_pretrained`` folder.
    Commands that generate from several prompts (patching, CAA, SAE) leave ``prompt`` empty and
    validate with ``require_prompt=False``.
    """

    model: str = "embedded"
    device: str = "cpu"

    def validate(self, *, require_prompt: bool = True) -> Recipe:
        """Check the recipe; returns it so that ``Recipe(...).validate()`` reads in one line."""
        check_text("model", self.model, required=True, max_chars=4096)
        check_device(self.device)
        self.validate_settings(require_prompt=require_prompt)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LsacSpec:
    """Layer-selective attention caching asked for a run (resolved into an intervention by
    :func:`engine.convergence.command.resolve_lsac` before generating).

    ``profile``: a ``convergence.json`` path, or ``None`` to diagnose the request first;
    ``report`` / ``sweep``: an already computed report and freezing sweep (the GUI keeps its last).
    """

    preset: str = "off"
    profile: str | None = None
    budget_mb: float = 1024.0
    dtype: str = "model"
    kinds: tuple[str, ...] = ("self",)
    report: Any = None
    sweep: Any = None

    @property
    def active(self) -> bool:
        return self.preset != "off"

    def validate(self) -> LsacSpec:
        if self.preset not in LSAC_CHOICES:
            raise EngineError(f"LSAC preset must be one of {', '.join(LSAC_CHOICES)} (got {self.preset!r})")
        if self.dtype not in LSAC_CACHE_DTYPES:
            raise EngineError(f"LSAC cache dtype must be one of {', '.join(LSAC_CACHE_DTYPES)} (got {self.dtype!r})")
        if not self.kinds or any(k not in ("self", "cross") for k in self.kinds):
            raise EngineError(f"LSAC kinds must be self and/or cross (got {self.kinds!r})")
        check_float("LSAC budget (MB)", self.budget_mb, 0.0, LIMITS.memory_budget_max_mb, low_open=True)
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-ready record (the report and sweep objects as their presence only)."""
        return {"preset": self.preset, "profile": self.profile, "budget_mb": self.budget_mb,
                "dtype": self.dtype, "kinds": list(self.kinds),
                "report": self.report is not None, "sweep": self.sweep is not None}


def check_head_mask(mask: Any) -> HeadMask | None:
    """A head mask as ``{site: tuple[bool, ...]}``; refuses other shapes and all-off masks."""
    if mask is None:
        return None
    if not isinstance(mask, dict):
        raise EngineError(f"head mask must map site names to lists of booleans (got {type(mask).__name__})")
    out: HeadMask = {}
    for site, flags in mask.items():
        if not isinstance(site, str) or not isinstance(flags, (list, tuple)) or not flags:
            raise EngineError(f"head mask entry {site!r} must be a non-empty list of booleans")
        if not all(isinstance(b, bool) for b in flags):
            raise EngineError(f"head mask entry {site!r} must hold only true/false values")
        if len(flags) > 4096:
            raise EngineError(f"head mask entry {site!r} has {len(flags)} heads; the limit is 4096")
        out[site] = tuple(flags)
    if out and not any(any(v) for v in out.values()):
        raise EngineError("the head mask keeps no head: select at least one head")
    return out


def recipe_from_text(text: dict[str, str]) -> tuple[Recipe | None, dict[str, str]]:
    """A recipe from the text of form fields (the GUI's Run panel), checked field by field.

    Returns the recipe (or ``None``) and one message per field that is wrong, with the same
    limits as :meth:`Recipe.validate`. A model that looks like a path must be an existing folder.
    """
    from pathlib import Path

    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    def attempt(name: str, check) -> None:
        try:
            values[name] = check()
        except EngineError as exc:
            errors[name] = str(exc)

    def number(name: str, kind: type) -> Any:
        raw = text.get(name, "").strip()
        try:
            return kind(raw)
        except ValueError:
            raise EngineError(f"{name} must be {'a whole number' if kind is int else 'a number'} (got “{raw}”)") from None

    attempt("prompt", lambda: check_text("prompt", text.get("prompt", "").strip(), required=True))
    attempt("negative_prompt", lambda: check_text("negative prompt", text.get("negative_prompt", "").strip(),
                                                  required=False))
    attempt("seed", lambda: check_int("seed", number("seed", int), 0, LIMITS.seed_max))
    attempt("steps", lambda: check_int("steps", number("steps", int), 1, LIMITS.steps_max))
    attempt("guidance", lambda: check_float("guidance", number("guidance", float), 0.0, LIMITS.guidance_max))
    attempt("duration", lambda: check_float("duration", number("duration", float), 0.0, LIMITS.duration_max_s,
                                            low_open=True))
    attempt("device", lambda: check_device(text.get("device", "cpu").strip() or "cpu"))
    model = text.get("model", "").strip()
    if not model:
        errors["model"] = "choose a model: embedded, a hub id or a local folder"
    elif (model.startswith(("/", ".", "~")) or "\\" in model) and not Path(model).expanduser().is_dir():
        errors["model"] = f"folder {model} does not exist: pick a folder written by save_pretrained"
    else:
        values["model"] = model
    if errors:
        return None, errors
    return Recipe(**values), {}
