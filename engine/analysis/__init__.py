"""Attention analysis: from recorded ``(H, Q, K)`` frames to time × mel maps and alignment scores.

Pure numpy/scipy; no Qt, no torch. Modules:

* :mod:`~engine.analysis.melscale` — Hz ↔ mel (Slaney/HTK), band centres/edges, the Hz of each
  target-grid bin (``grid_hz``), Slaney-normalised filterbank, ``mel_spectrogram``, ``power_to_db``.
* :mod:`~engine.analysis.pooling` — ``reduce_heads`` (head mean / head mask), ``pool_tokens``
  (mean, max, weighted softmax(β·u), keyword, none), ``keyword_indices``.
* :mod:`~engine.analysis.mapping` — ``lattice_to_grid`` (time-major reshape → bilinear resize to
  (T, F) = (128, 64), boundary nearest/zero/reflect), ``resize`` (bilinear or area).
* :mod:`~engine.analysis.aggregate` — ``step_weights`` (uniform, σ-late), ``MapAccumulator`` /
  ``aggregate_maps`` (mean, max, top-K), ``aggregate_frames``, ``aggregate_run`` → ``Aggregate``
  (tokens × T × F), ``fit_layer_weights`` (NNLS on the simplex).
* :mod:`~engine.analysis.templates` — ``INSTRUMENT_BANDS`` (Slakh classes), ``band_mask``,
  ``band_tf_mask``, ``frequency_profile`` and ``activity_mask`` from stems.
* :mod:`~engine.analysis.metrics` — IoU (at τ, swept), ``average_precision``, Pearson/Spearman
  profile correlation, ``pointing_game``, ``class_table`` (micro / macro / positive-weighted),
  ``alignment_report``.
* :mod:`~engine.analysis.heads` — label-free and ``oracle_*`` head relevance, ``select_heads``,
  ``selective_map``, ``ordered_weakening``, ``daam_map``.
"""
