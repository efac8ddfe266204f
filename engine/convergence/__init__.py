"""Attention convergence diagnostics, causal freezing and layer-selective attention caching (LSAC).

After *Inside the Latent Flow* (SAM-Audio causal probing), Sections 2.2, 2.4, 4.2 and 4.4:

* :mod:`.entropy` — attention entropy of probability rows (natural log);
* :mod:`.diagnostics` — per site and step entropy during a run, its step-to-step change and the
  stable / fast classification of sites;
* :mod:`.lsac` — the attention cache: from a site's freeze step on, reuse its softmax(QKᵀ) and
  compute only V, probs @ V and the output projection; presets Safe / Balanced / Aggressive;
* :mod:`.freeze` — the causal-freezing sweep over sites × freeze steps;
* :mod:`.compare` — LSAC against naive step reduction at matched attention compute.
"""
