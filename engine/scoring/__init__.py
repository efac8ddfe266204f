"""The instrument scorer shipped with AIBA Studio (``resources/models/aiba-instrument-scorer``).

A small log-mel CNN trained on FluidSynth stems (``python main.py train-scorer``). It gives the
concept probability that ``patch`` and ``steer`` use as alignment, and TADA's two preservation
measures in its own feature space (:mod:`engine.scoring.distances`). It lives here, not under
``engine/models/`` (the generators), because it measures audio: the interventions import it to
score, and it must not pull in a generator. ``model`` and ``train`` import torch; ``distances``
needs numpy only.
"""
