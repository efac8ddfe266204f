"""The one short display name of an attention site, used by every view, figure and dock.

Full module paths (``up_blocks.0.attentions.1.transformer_blocks.0.attn2``) are exact but too long
for a list or an axis; the label keeps what tells sites apart (``up0.a1.attn2``) and views show
the full name in tooltips.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_RULES = (
    (re.compile(r"\.transformer_blocks\.0(?=\.)"), ""),  # the UNet's single transformer per attention
    (re.compile(r"\b(down|up)_blocks\.(\d+)"), r"\1\2"),
    (re.compile(r"\bmid_block\b"), "mid"),
    (re.compile(r"\battentions\.(\d+)"), r"a\1"),
    (re.compile(r"\btransformer_blocks\.(\d+)"), r"tb\1"),
)


def site_label(name: str) -> str:
    """``up_blocks.0.attentions.1.transformer_blocks.0.attn2`` → ``up0.a1.attn2``;
    ``transformer_blocks.3.attn2`` → ``tb3.attn2``; other names unchanged."""
    label = name
    for pattern, replacement in _RULES:
        label = pattern.sub(replacement, label)
    return label


def site_labels(names: Iterable[str]) -> dict[str, str]:
    """Label of each name, the full name where two names would get the same label."""
    names = list(names)
    counts = Counter(site_label(n) for n in names)
    return {n: site_label(n) if counts[site_label(n)] == 1 else n for n in names}
