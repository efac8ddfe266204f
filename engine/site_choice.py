"""Which attention sites a command works on: ``--sites`` as names, indices or a kind."""

from __future__ import annotations

from engine.types import EngineError, Site


def resolve_sites(spec: str | None, sites: list[Site]) -> list[str] | None:
    """``--sites`` as comma-separated names or indices → site names; ``None`` for an empty spec.

    ``self`` / ``cross`` pick every site of that kind; an unknown item is one EngineError line.
    """
    if spec is None or not spec.strip():
        return None
    text = spec.strip()
    if text in ("self", "cross"):
        return [s.name for s in sites if s.kind == text]
    by_name = {s.name: s for s in sites}
    by_index = {str(s.index): s for s in sites}
    chosen: list[str] = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        site = by_name.get(item) or by_index.get(item)
        if site is None:
            raise EngineError(f"unknown site {item!r}: list them with `python main.py sites --model ...`")
        chosen.append(site.name)
    return chosen
