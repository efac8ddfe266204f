"""Test-wide settings: one torch thread, offscreen Qt, isolated user settings."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

try:  # torch is optional for pure-numpy test modules
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
