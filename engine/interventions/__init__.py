"""Steering and causal localisation: K/V activation patching (TADA Eq. 9), CAA and TopK-SAE
steering, cross-attention ablations, and their evaluation.

Modules: :mod:`~.processors` (the attention processors), :mod:`~.layers` (layer naming, run
state), :mod:`~.patching`, :mod:`~.caa`, :mod:`~.sae`, :mod:`~.ablation`, :mod:`~.scorers`,
:mod:`~.steer_eval`, :mod:`~.prompt_sets`, :mod:`~.commands` (one function per CLI command) and
:mod:`~.cli_args` (their flags). Interventions join a run through
``GenerationRequest.interventions`` (see :mod:`engine.probe.intervention`).
"""
