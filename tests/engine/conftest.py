"""Engine test fixtures: the offline tiny AudioLDM2 and Stable Audio backends (one per module)."""

from __future__ import annotations

import pytest

from engine.backends.audioldm2 import AudioLDM2Backend
from engine.backends.stable_audio import StableAudioBackend
from engine.backends.tiny import build_tiny


@pytest.fixture(scope="module")
def ldm():
    return AudioLDM2Backend(build_tiny("audioldm2"), "tiny:audioldm2")


@pytest.fixture(scope="module")
def sao():
    return StableAudioBackend(build_tiny("stable_audio"), "tiny:stable_audio")
