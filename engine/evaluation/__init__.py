"""``python main.py eval``: AIBA's instrument-band evaluation and selective head aggregation.

Modules: :mod:`~engine.evaluation.prompts` (class words and prompt templates),
:mod:`~engine.evaluation.ground_truth` (region / fundamental / band / stem / output ground truth),
:mod:`~engine.evaluation.windows` (the stem window, chosen before generating),
:mod:`~engine.evaluation.maps` (run → concept map, ablation switches, per-head data),
:mod:`~engine.evaluation.scoring` (one item's scores), :mod:`~engine.evaluation.tables`
(Tables 1 and 3 and the profile table from ``items.jsonl``), :mod:`~engine.evaluation.figures`
(Figures 2 and 3, weakening curves), :mod:`~engine.evaluation.runner` (``EvalOptions``,
``run_eval``), :mod:`~engine.evaluation.head_selection` (``run_head_selection``).
See ``docs/EVALUATION.md``.
"""

from engine.evaluation.head_selection import run_head_selection
from engine.evaluation.runner import EvalOptions, run_eval

__all__ = ["EvalOptions", "run_eval", "run_head_selection"]
